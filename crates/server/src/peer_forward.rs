//! Client writes a follower forwards to the leader, carried inside the peer frame stream
//! ([`crate::peer_stream`]) instead of one gRPC `ForwardBatch` call per batch.
//!
//! Why: with Raft messages on the frame stream, the forwarded writes were the last hot
//! traffic on gRPC between members; every batch cost an HTTP/2 stream, its headers, a
//! tonic call and its wake-ups on both sides (etcd's followers forward a proposal as a
//! Raft message on the stream they already have).
//!
//! **Wire.** The follower sends a `Forward` frame ([`Kind::Forward`], a `ForwardFrame`:
//! a batch id it chose, its deadline, the commands in their log encoding) on the stream
//! it dialled to the leader; the leader answers on the same connection with a
//! `ForwardAnswers` frame (a `ForwardAnswerFrame`: the batch id, one `ForwardResponse`
//! per command in order), whenever the batch is done: answers may overtake each other.
//! Only a leader whose Welcome says protocol version [`FORWARD_FRAMES_VERSION`] or later
//! gets them; an older one gets the gRPC calls, as before.
//!
//! **Outcomes, as the gRPC path's.** Answered: each write's own answer. Never written to
//! the connection (the stream ended first): sent again over gRPC, nothing was applied.
//! Written and then the stream ended, or no answer by the deadline: `Timeout` for each
//! write, as the outcome is unknown; never `NotLeader`, which would resend a write that
//! may have been applied (a client's session, where it has one, still dedups its retry).
//!
//! **Bounds.** Follower: batches as [`crate::peer`] makes them (at most
//! [`FORWARD_BATCH_COMMANDS_MAX`] writes, about [`crate::peer::FORWARD_BATCH_BYTES_MAX`]
//! bytes), at most [`crate::peer::FORWARD_BATCHES_IN_FLIGHT`] per leader, each with a
//! deadline. Leader, per stream: at most [`FORWARD_FRAMES_ACCEPTED_MAX`] batches being
//! served (one more is answered `Busy` for every write, not executed), each served for
//! at most its deadline capped at [`FORWARD_TIMEOUT_MAX`]; a frame's commands are
//! counted before anything is decoded, so a frame of many empty commands costs no
//! allocation. A frame that breaks the rules (another cluster, too many commands, not
//! protobuf, a member removed since the stream opened) closes the stream.

use crate::peer::{FORWARD_BATCHES_IN_FLIGHT, FORWARD_BATCH_COMMANDS_MAX};
use crate::peer_frame::{put_message, Kind};
use crate::runtime::{NodeHandle, Reply};
use bytes::{Bytes, BytesMut};
use kv::Command;
use node::RequestError;
use prost::Message as _;
use proto::peer::{ForwardAnswerFrame, ForwardError, ForwardFrame, ForwardResponse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// The peer protocol version from which a member serves forwarded writes on the frame
/// stream (`HelloResponse.protocol_version`).
pub const FORWARD_FRAMES_VERSION: u32 = 2;
/// Forwarded batches a leader serves at once per stream; a follower of this build sends
/// at most [`FORWARD_BATCHES_IN_FLIGHT`], so the rest is slack for a retry racing an
/// answer.
pub const FORWARD_FRAMES_ACCEPTED_MAX: usize = 4 * FORWARD_BATCHES_IN_FLIGHT;
/// The longest a leader serves one forwarded batch, whatever deadline it carries (0: none
/// given, this one).
pub const FORWARD_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// The field numbers of the repeated fields counted before decoding.
const FORWARD_FRAME_COMMANDS_FIELD: u64 = 4;
const ANSWER_FRAME_RESPONSES_FIELD: u64 = 2;

// ---------------------------------------------------------------------------------------
// The follower's side.

/// Why a batch got no answers over the frame stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// It never reached the connection (no stream open, or it ended first): nothing was
    /// applied, send it another way.
    NotSent,
    /// It was written and the stream ended, or the deadline passed: outcome unknown.
    Lost,
}

/// A batch handed to a frame stream, and where its answers go.
pub struct Job {
    commands: Vec<Bytes>,
    timeout: Duration,
    answer: oneshot::Sender<Result<Vec<ForwardResponse>, Unanswered>>,
}

/// Where batches for one peer go while a frame stream to it is open (and the peer
/// serves them); shared by the peer's forwarding task and its stream task.
#[derive(Clone, Default)]
pub struct Route(Arc<Mutex<Option<mpsc::Sender<Job>>>>);

impl Route {
    /// Opens the route on a stream just welcomed: batches go to the returned queue until
    /// it is dropped (the stream ended).
    pub fn open(&self) -> Outgoing {
        let (tx, jobs) = mpsc::channel(FORWARD_BATCHES_IN_FLIGHT);
        *self.0.lock().expect("forward route lock") = Some(tx.clone());
        Outgoing { route: self.clone(), tx, jobs, pending: Pending::default(), next_id: 1 }
    }

    /// Sends `commands` over the open stream and waits up to `timeout` for the answers
    /// (one per command, in order).
    pub async fn forward(
        &self,
        commands: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Vec<ForwardResponse>, Unanswered> {
        let Some(queue) = self.0.lock().expect("forward route lock").clone() else {
            return Err(Unanswered::NotSent);
        };
        let (answer, answered) = oneshot::channel();
        let job = Job { commands, timeout, answer };
        let waited = tokio::time::timeout(timeout, async {
            if queue.send(job).await.is_err() {
                return Err(Unanswered::NotSent);
            }
            // Dropped unanswered: the stream ended after writing it.
            answered.await.unwrap_or(Err(Unanswered::Lost))
        });
        waited.await.unwrap_or(Err(Unanswered::Lost))
    }
}

/// Batches written and not yet answered: id → (command count, answer's way). Shared by
/// the stream's writing and reading halves; dropped with both, which answers the rest
/// [`Unanswered::Lost`].
type Answers = oneshot::Sender<Result<Vec<ForwardResponse>, Unanswered>>;

/// See [`Answers`].
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<HashMap<u64, (usize, Answers)>>>);

impl Pending {
    /// Takes one `ForwardAnswers` frame from the leader; `Err`: the frame is not one
    /// (close the stream). An answer to a batch given up on (or never sent) is dropped.
    pub fn answer(&self, payload: Bytes) -> Result<(), String> {
        let counted =
            count_field(&payload, ANSWER_FRAME_RESPONSES_FIELD, FORWARD_BATCH_COMMANDS_MAX)
                .map_err(|e| format!("bad ForwardAnswers frame: {e}"))?;
        let frame = ForwardAnswerFrame::decode(payload)
            .map_err(|e| format!("bad ForwardAnswers frame: {e}"))?;
        debug_assert_eq!(counted, frame.responses.len());
        let Some((count, answer)) =
            self.0.lock().expect("forward pending lock").remove(&frame.batch_id)
        else {
            return Ok(());
        };
        let answers = match frame.responses.len() == count {
            true => Ok(frame.responses),
            false => Err(Unanswered::Lost), // a broken leader: the outcome is unknown
        };
        let _ = answer.send(answers);
        Ok(())
    }
}

/// The forwarding side of one open stream: its queue of batches, the batches on the way.
/// Dropped when the stream ends: the route closes, and batches still queued are answered
/// [`Unanswered::NotSent`].
pub struct Outgoing {
    route: Route,
    tx: mpsc::Sender<Job>,
    jobs: mpsc::Receiver<Job>,
    pending: Pending,
    next_id: u64,
}

impl Outgoing {
    /// The batches on the way, for the stream's reading half.
    pub fn pending(&self) -> Pending {
        self.pending.clone()
    }

    /// The next batch to send (cancel safe).
    pub async fn next(&mut self) -> Job {
        // `self.tx` keeps the queue open: `recv` never ends with `None`.
        self.jobs.recv().await.expect("the queue's own sender is held")
    }

    /// The next batch already queued, if any.
    pub fn try_next(&mut self) -> Option<Job> {
        self.jobs.try_recv().ok()
    }

    /// Appends `job` to `out` as one `Forward` frame, and waits for its answers.
    pub fn put(&mut self, out: &mut BytesMut, cluster_id: u64, job: Job) {
        let batch_id = self.next_id;
        self.next_id += 1;
        let count = job.commands.len();
        let timeout_ms = u32::try_from(job.timeout.as_millis()).unwrap_or(u32::MAX);
        let frame = ForwardFrame { cluster_id, batch_id, timeout_ms, commands: job.commands };
        put_message(out, Kind::Forward, &frame);
        let mut pending = self.pending.0.lock().expect("forward pending lock");
        // Batches their callers gave up on are answered `Lost` by then: forget them, so
        // the map holds at most the batches in flight.
        pending.retain(|_, (_, answer)| !answer.is_closed());
        pending.insert(batch_id, (count, job.answer));
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        {
            let mut route = self.route.0.lock().expect("forward route lock");
            if route.as_ref().is_some_and(|tx| tx.same_channel(&self.tx)) {
                *route = None;
            }
        }
        self.jobs.close();
        while let Ok(job) = self.jobs.try_recv() {
            let _ = job.answer.send(Err(Unanswered::NotSent));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The leader's side.

/// An answer frame ready to write, holding its batch's place until written.
#[derive(Debug)]
pub struct Answer {
    /// The `ForwardAnswers` frame.
    pub frame: BytesMut,
    _place: Option<OwnedSemaphorePermit>,
}

/// The forwarded batches of one incoming stream being served.
pub struct Incoming {
    places: Arc<Semaphore>,
    tx: mpsc::Sender<Answer>,
    rx: mpsc::Receiver<Answer>,
}

impl Default for Incoming {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(FORWARD_FRAMES_ACCEPTED_MAX);
        Incoming { places: Arc::new(Semaphore::new(FORWARD_FRAMES_ACCEPTED_MAX)), tx, rx }
    }
}

impl Incoming {
    /// Takes one `Forward` frame of the stream's member: its writes go to `node`, and
    /// their answers come out of [`Incoming::next`]; or, when
    /// [`FORWARD_FRAMES_ACCEPTED_MAX`] batches are being served already, the answer
    /// (`Busy` for every write, none executed) is returned to write now. `Err`: the
    /// frame breaks the rules (close the stream).
    pub fn accept(
        &self,
        node: &NodeHandle,
        cluster_id: u64,
        payload: Bytes,
    ) -> Result<Option<Answer>, String> {
        count_field(&payload, FORWARD_FRAME_COMMANDS_FIELD, FORWARD_BATCH_COMMANDS_MAX)
            .map_err(|e| format!("bad Forward frame: {e}"))?;
        let frame = ForwardFrame::decode(payload).map_err(|e| format!("bad Forward frame: {e}"))?;
        if frame.cluster_id != cluster_id {
            return Err("forwarded writes from another cluster".into());
        }
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            let busy = ForwardResponse { error: ForwardError::Busy as i32, ..Default::default() };
            let responses = vec![busy; frame.commands.len()];
            return Ok(Some(answer_frame(frame.batch_id, responses, None)));
        };
        let timeout = match frame.timeout_ms {
            0 => FORWARD_TIMEOUT_MAX,
            ms => Duration::from_millis(ms.into()).min(FORWARD_TIMEOUT_MAX),
        };
        let (node, tx) = (node.clone(), self.tx.clone());
        tokio::spawn(async move {
            let responses = serve(&node, &frame.commands, timeout).await;
            // The stream may have ended meanwhile: then nobody waits for the answer.
            let _ = tx.send(answer_frame(frame.batch_id, responses, Some(place))).await;
        });
        Ok(None)
    }

    /// The next answer to write (cancel safe).
    pub async fn next(&mut self) -> Answer {
        self.rx.recv().await.expect("the queue's own sender is held")
    }

    /// The next answer ready now, if any.
    pub fn try_next(&mut self) -> Option<Answer> {
        self.rx.try_recv().ok()
    }
}

fn answer_frame(
    batch_id: u64,
    responses: Vec<ForwardResponse>,
    place: Option<OwnedSemaphorePermit>,
) -> Answer {
    let mut frame = BytesMut::new();
    put_message(&mut frame, Kind::ForwardAnswers, &ForwardAnswerFrame { batch_id, responses });
    Answer { frame, _place: place }
}

/// Runs forwarded `commands` (log encoding) as one submission to `node`, within
/// `timeout`: one answer per command, in order; `Malformed` for one that does not
/// decode (the others still run). Both transports (gRPC `ForwardBatch`, `Forward`
/// frames) serve batches here.
pub async fn serve(
    node: &NodeHandle,
    commands: &[Bytes],
    timeout: Duration,
) -> Vec<ForwardResponse> {
    let mut decodes = Vec::with_capacity(commands.len());
    let mut cmds = Vec::with_capacity(commands.len());
    for c in commands {
        let cmd = Command::decode(c).ok();
        decodes.push(cmd.is_some());
        cmds.extend(cmd);
    }
    let n = cmds.len();
    let replies = match tokio::time::timeout(timeout, node.writes(cmds)).await {
        Ok(replies) => replies,
        Err(_) => vec![Err(RequestError::Timeout); n],
    };
    let mut replies = replies.into_iter();
    let applied = node.applied_index();
    decodes
        .into_iter()
        .map(|decoded| match decoded {
            true => response(replies.next().expect("one reply per write"), applied),
            false => {
                ForwardResponse { error: ForwardError::Malformed as i32, ..Default::default() }
            }
        })
        .collect()
}

/// What the leader answers for one forwarded write (`applied`: its applied index after
/// the write's answer).
pub fn response(reply: Reply, applied: u64) -> ForwardResponse {
    let mut out = ForwardResponse::default();
    match reply {
        Ok(resp) => {
            out.response = resp.encode().into();
            out.applied_index = applied;
        }
        Err(RequestError::NotLeader { leader }) => {
            out.error = ForwardError::NotLeader as i32;
            out.leader = leader.unwrap_or(0);
        }
        Err(RequestError::Timeout) => out.error = ForwardError::Timeout as i32,
        Err(RequestError::TooLarge { size, max }) => {
            out.error = ForwardError::TooLarge as i32;
            out.size = size;
            out.max = max;
        }
        Err(RequestError::Busy) => out.error = ForwardError::Busy as i32,
        // Only a forward answer makes it; passed on as it came.
        Err(RequestError::NotCapable) => out.error = ForwardError::Malformed as i32,
    }
    out
}

/// How many times field `field` occurs at the top level of the protobuf message `buf`,
/// walking it without decoding anything; `Err` past `max` occurrences or on bytes that
/// are not a protobuf message. Run before decoding peer bytes whose repeated field would
/// otherwise cost ~32 bytes of memory per 2 bytes of input.
pub fn count_field(mut buf: &[u8], field: u64, max: usize) -> Result<usize, String> {
    let varint =
        |buf: &mut &[u8]| prost::decode_length_delimiter(&mut *buf).map_err(|e| e.to_string());
    let mut n = 0;
    while !buf.is_empty() {
        let key = varint(&mut buf)? as u64;
        let skip = match key & 7 {
            0 => varint(&mut buf).map(|_| 0)?,
            1 => 8,
            2 => varint(&mut buf)?,
            5 => 4,
            wire_type => return Err(format!("wire type {wire_type} (field {})", key >> 3)),
        };
        if skip > buf.len() {
            return Err(format!("field {} runs past the end", key >> 3));
        }
        buf = &buf[skip..];
        if key >> 3 == field {
            n += 1;
            if n > max {
                return Err(format!("more than {max} of field {field}"));
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_frame::take_frame;
    use kv::{Op, PutRequest, Response};

    fn put(key: &str) -> Bytes {
        let put = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        Command::new(Op::Put(put)).encode().into()
    }

    fn frame_payload(mut out: BytesMut, kind: Kind) -> Bytes {
        let frame = take_frame(&mut out).unwrap().expect("a whole frame");
        assert_eq!(frame.kind, kind);
        assert!(out.is_empty());
        frame.payload
    }

    /// The count walks the message without decoding it: it agrees with prost on valid
    /// messages, stops one past the bound, and refuses bytes that are not protobuf.
    #[test]
    fn repeated_fields_are_counted_within_bounds_before_decoding() {
        let frame = |n: usize| ForwardFrame {
            cluster_id: 7,
            batch_id: u64::MAX,
            timeout_ms: 5000,
            commands: vec![Bytes::new(); n],
        };
        for n in [0, 1, 3, FORWARD_BATCH_COMMANDS_MAX] {
            let bytes = frame(n).encode_to_vec();
            assert_eq!(
                count_field(&bytes, FORWARD_FRAME_COMMANDS_FIELD, FORWARD_BATCH_COMMANDS_MAX),
                Ok(n)
            );
        }
        // 2 bytes per empty command: 8 M of them would fit a 16 MiB frame.
        let bytes = frame(FORWARD_BATCH_COMMANDS_MAX + 1).encode_to_vec();
        let err = count_field(&bytes, FORWARD_FRAME_COMMANDS_FIELD, FORWARD_BATCH_COMMANDS_MAX);
        assert_eq!(err, Err(format!("more than {FORWARD_BATCH_COMMANDS_MAX} of field 4")));
        for garbage in [&[0x22, 0x05, 1][..], &[0xff; 11], &[0x0b], &[0x23, 0x24], &[0x09, 1, 2]] {
            assert!(count_field(garbage, 4, 10).is_err(), "{garbage:?}");
        }
        // Random bytes: an error or a count within the bound, never a panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bytes: Vec<u8> = (0..seed % 64).map(|k| (seed >> (k % 56)) as u8).collect();
            if let Ok(n) = count_field(&bytes, 4, 3) {
                assert!(n <= 3);
            }
        }
    }

    /// No stream open: `NotSent` (the caller uses gRPC). A batch queued when the stream
    /// ends, never written: `NotSent`. A batch written and then the stream ends: `Lost`.
    #[tokio::test]
    async fn a_batch_is_not_sent_or_lost_by_whether_it_was_written() {
        let route = Route::default();
        let second = Duration::from_secs(1);
        assert_eq!(route.forward(vec![put("a")], second).await, Err(Unanswered::NotSent));

        let outgoing = route.open();
        let queued = tokio::spawn({
            let route = route.clone();
            async move { route.forward(vec![put("a")], Duration::from_secs(10)).await }
        });
        while outgoing.jobs.is_empty() {
            tokio::task::yield_now().await;
        }
        drop(outgoing); // the stream ended before writing it
        assert_eq!(queued.await.unwrap(), Err(Unanswered::NotSent));
        assert_eq!(route.forward(vec![put("a")], second).await, Err(Unanswered::NotSent));

        let mut outgoing = route.open();
        let written = tokio::spawn({
            let route = route.clone();
            async move { route.forward(vec![put("a")], Duration::from_secs(10)).await }
        });
        let job = outgoing.next().await;
        outgoing.put(&mut BytesMut::new(), 7, job);
        drop(outgoing); // the stream ended after writing it
        assert_eq!(written.await.unwrap(), Err(Unanswered::Lost));
    }

    /// Answers find their batch by id, in any order; an answer with the wrong number of
    /// responses is `Lost` (unknown outcome); one for a batch nobody waits for is
    /// dropped; a batch past its deadline is `Lost` and forgotten.
    #[tokio::test]
    async fn answers_go_to_their_batch_by_id() {
        let route = Route::default();
        let mut outgoing = route.open();
        let pending = outgoing.pending();
        let send = |keys: &'static [&'static str], timeout| {
            let route = route.clone();
            tokio::spawn(async move {
                route.forward(keys.iter().map(|k| put(k)).collect(), timeout).await
            })
        };
        let long = Duration::from_secs(30);
        let (one, two) = (send(&["a"], long), send(&["b", "c"], long));
        let mut out = BytesMut::new();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let job = outgoing.next().await;
            let n = job.commands.len();
            outgoing.put(&mut out, 7, job);
            let frame = ForwardFrame::decode(frame_payload(out.split(), Kind::Forward)).unwrap();
            assert_eq!((frame.cluster_id, frame.commands.len(), frame.timeout_ms), (7, n, 30_000));
            ids.push((frame.batch_id, n));
        }
        let ok = |n: u64| ForwardResponse { applied_index: n, ..Default::default() };
        let answer = |batch_id, responses: Vec<ForwardResponse>| {
            ForwardAnswerFrame { batch_id, responses }.encode_to_vec().into()
        };
        let (two_id, one_id) = match ids[..] {
            [(a, 2), (b, 1)] | [(b, 1), (a, 2)] => (a, b),
            _ => panic!("{ids:?}"),
        };
        pending.answer(answer(two_id, vec![ok(2), ok(3)])).unwrap();
        pending.answer(answer(one_id + two_id + 1, vec![ok(9)])).unwrap(); // nobody's
        assert_eq!(two.await.unwrap(), Ok(vec![ok(2), ok(3)]));
        pending.answer(answer(one_id, vec![ok(1), ok(1)])).unwrap(); // one too many
        assert_eq!(one.await.unwrap(), Err(Unanswered::Lost));
        assert!(pending.answer(Bytes::from_static(&[0xff; 3])).is_err(), "not protobuf");

        let late = send(&["d"], Duration::from_millis(50));
        let job = outgoing.next().await;
        outgoing.put(&mut out, 7, job);
        assert_eq!(late.await.unwrap(), Err(Unanswered::Lost));
        let job = tokio::spawn({
            let route = route.clone();
            async move { route.forward(vec![put("e")], long).await }
        });
        let next = outgoing.next().await;
        outgoing.put(&mut out, 7, next);
        assert_eq!(pending.0.lock().unwrap().len(), 1, "the late batch was forgotten");
        drop(outgoing);
        assert_eq!(job.await.unwrap(), Err(Unanswered::Lost));
    }

    /// The leader runs a frame's writes and answers each in order, `Malformed` for one
    /// that does not decode; refuses frames of another cluster, with too many commands,
    /// or not protobuf; and answers `Busy` for every write of a frame past
    /// [`FORWARD_FRAMES_ACCEPTED_MAX`] batches being served, running none.
    #[tokio::test]
    async fn the_leader_serves_bounded_batches_and_answers_each_write() {
        let (node, _join) = crate::runtime::tests::leader().await;
        let mut incoming = Incoming::default();
        let frame = |cluster_id, commands: Vec<Bytes>| {
            let f = ForwardFrame { cluster_id, batch_id: 41, timeout_ms: 0, commands };
            Bytes::from(f.encode_to_vec())
        };
        let cmds = vec![put("a"), Bytes::from_static(b"\xff\xff"), put("b")];
        assert!(incoming.accept(&node, 7, frame(7, cmds)).unwrap().is_none());
        // Its place is given back with the answer (the rest of the `Answer`, dropped here).
        let Answer { frame: answer, .. } = incoming.next().await;
        let answer = ForwardAnswerFrame::decode(frame_payload(answer, Kind::ForwardAnswers));
        let answer = answer.unwrap();
        assert_eq!(answer.batch_id, 41);
        let errors: Vec<i32> = answer.responses.iter().map(|r| r.error).collect();
        let (none, malformed) = (ForwardError::None as i32, ForwardError::Malformed as i32);
        assert_eq!(errors, [none, malformed, none]);
        for r in [&answer.responses[0], &answer.responses[2]] {
            assert!(matches!(Response::decode(&r.response), Ok(Response::Put(_))));
            assert!(r.applied_index >= 2, "{r:?}");
        }

        let err = incoming.accept(&node, 7, frame(8, vec![put("c")])).unwrap_err();
        assert!(err.contains("another cluster"), "{err}");
        let many = frame(7, vec![Bytes::new(); FORWARD_BATCH_COMMANDS_MAX + 1]);
        assert!(incoming.accept(&node, 7, many).unwrap_err().contains("more than 1024"));
        assert!(incoming.accept(&node, 7, Bytes::from_static(&[0x22, 9])).is_err());

        let held = incoming.places.clone().acquire_many_owned(FORWARD_FRAMES_ACCEPTED_MAX as u32);
        let held = held.await.unwrap();
        let busy = incoming.accept(&node, 7, frame(7, vec![put("x"), put("y")])).unwrap();
        let busy = busy.expect("answered at once");
        let busy = ForwardAnswerFrame::decode(frame_payload(busy.frame, Kind::ForwardAnswers));
        let errors: Vec<i32> = busy.unwrap().responses.iter().map(|r| r.error).collect();
        assert_eq!(errors, [ForwardError::Busy as i32; 2]);
        assert!(incoming.try_next().is_none(), "nothing was served");
        drop(held);
        let x = node.request(node::Request::Read {
            query: node::ReadQuery::Get(b"x".to_vec()),
            serializable: false,
        });
        match x.await {
            Ok(Response::Get(g)) => assert!(g.kv.is_none(), "a refused write did not run"),
            other => panic!("{other:?}"),
        }
    }
}
