//! etcd's `Watch` service: one bidirectional stream carries any number of watchers.
//!
//! Every watcher is served from the member's MVCC history, never from a feed of live
//! changes: it remembers the next revision it owes its client, and whenever the
//! member's applied revision moves past it (the node thread publishes the revision
//! after each batch, [`NodeHandle::revision`](crate::runtime::NodeHandle::revision)),
//! it reads the events of its key range from that revision on from the member's
//! applied state, on a read worker off the node thread, a bounded batch at a time
//! ([`NodeHandle::events`](crate::runtime::NodeHandle::events)), sends them, and moves
//! on. So:
//!
//! - events come in revision order (a transaction's in the order of its
//!   operations, as etcd sends them), each exactly once, with no gaps: a watcher
//!   advances only past revisions it has sent, and a revision is never split across
//!   responses (except by `fragment`, which the client reassembles);
//! - a watch that starts in the past, resumes after a reconnect (the client passes
//!   its last revision + 1), or moves to another member after a leader change is the
//!   same catch-up; every member applies the same log, so it has the same history;
//! - a watcher that needs history already compacted (a start below the compact
//!   revision) is told so, as etcd does: a response with `compact_revision` set
//!   and `canceled`. From the compact revision itself it gets what compaction
//!   keeps of that revision, its puts.
//!
//! One task per stream handles its requests and its watchers in turn, so a watcher's
//! `created` response always precedes its events, and a progress response follows
//! every event up to the revision it reports.
//!
//! A client that does not read its stream costs the member a bounded amount of memory,
//! whatever is written meanwhile: the responses queued for a stream are bounded in bytes
//! ([`STREAM_QUEUE_BYTES`]) as well as in number, and a watcher fetches its next batch
//! only once the queue has room for it. Until then the watcher simply stays behind at
//! its next revision — etcd's "slow watchers" — and catches up from the history when
//! the client reads again, losing nothing; if that history was compacted meanwhile, it
//! gets the compaction notice instead. So a stream holds at most its queue, the
//! response being encoded, and the one batch being sent (bounded by the node's
//! per-query budgets, [`EVENTS_BUDGET_PER_QUERY`](crate::runtime::EVENTS_BUDGET_PER_QUERY)
//! changes and about [`EVENTS_BYTES_PER_QUERY`](crate::runtime::EVENTS_BYTES_PER_QUERY)
//! bytes, a single larger revision excepted).

use crate::etcd::{key_value, Api};
use proto::etcdserverpb as pb;
use proto::mvccpb;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::{Response, Status, Streaming};

/// Responses queued per stream before the stream task waits for the client.
const STREAM_QUEUE_RESPONSES: usize = 64;
/// Bytes of responses queued per stream before the stream task waits for the client (a
/// response larger than this is queued alone). Two full responses: one queued while
/// the previous one is being written to the connection.
pub const STREAM_QUEUE_BYTES: usize = 2 * RESPONSE_EVENT_BYTES_MAX;
/// A watcher fetches its next batch only when at least this many bytes of the queue
/// are free: the batch's first response, at least, goes out without waiting.
const FETCH_ROOM_BYTES: usize = RESPONSE_EVENT_BYTES_MAX;
/// A response holds whole revisions up to about this many bytes of events; a single
/// larger revision goes alone (in fragments, if the watcher asked for them).
const RESPONSE_EVENT_BYTES_MAX: usize = 1 << 20;
/// How often a watcher with `progress_notify` and nothing to send hears the current
/// revision (etcd's default is 10 minutes).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's cancel reason for a watch id already used on the stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's cancel reason for a range whose end is not above its start.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's cancel reason for a watcher whose history was compacted.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// One watcher of a stream.
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision whose events it has not sent.
    next_revision: u64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// When it last sent anything (for `progress_notify`).
    last_sent: Instant,
}

/// The client went away or the node stopped: the stream ends.
struct Closed;

/// A queued response and its share of the stream's queue bytes, given back when the
/// connection takes the response.
type Queued = (Result<pb::WatchResponse, Status>, OwnedSemaphorePermit);

/// The responses of one stream, as the connection takes them: each one frees its
/// bytes of the queue as it leaves it.
pub struct Outgoing {
    rx: mpsc::Receiver<Queued>,
}

impl tokio_stream::Stream for Outgoing {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|queued| queued.map(|(response, _room)| response))
    }
}

/// The state of one Watch stream.
struct WatchStream {
    api: Api,
    out: mpsc::Sender<Queued>,
    /// Free bytes of the queue ([`STREAM_QUEUE_BYTES`] in all).
    room: Arc<Semaphore>,
    watchers: BTreeMap<i64, Watcher>,
    /// Next id to hand out; etcd starts at 0 and skips ids in use.
    next_id: i64,
    /// The stream's metadata (its auth token) and connection user: each create is
    /// checked against them, as etcd checks each create with the stream's context.
    metadata: tonic::metadata::MetadataMap,
    connection_user: Option<crate::auth::ConnectionUser>,
}

#[tonic::async_trait]
impl pb::watch_server::Watch for Api {
    type WatchStream = Outgoing;

    async fn watch(
        &self,
        request: tonic::Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let metadata = request.metadata().clone();
        let connection_user = request.extensions().get::<crate::auth::ConnectionUser>().cloned();
        let inbound = request.into_inner();
        let (out, rx) = mpsc::channel(STREAM_QUEUE_RESPONSES);
        let room = Arc::new(Semaphore::new(STREAM_QUEUE_BYTES));
        let stream = WatchStream {
            api: self.clone(),
            out,
            room,
            watchers: BTreeMap::new(),
            next_id: 0,
            metadata,
            connection_user,
        };
        tokio::spawn(stream.run(inbound));
        Ok(Response::new(Outgoing { rx }))
    }
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        let mut revision = self.api.node.revision();
        let mut progress = tokio::time::interval(PROGRESS_NOTIFY_INTERVAL / 4);
        let mut inbound_open = true;
        loop {
            let step = tokio::select! {
                msg = inbound.message(), if inbound_open => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    // A half-closed stream keeps delivering, as in etcd.
                    Ok(None) | Err(_) => {
                        inbound_open = false;
                        Ok(())
                    }
                },
                changed = revision.changed() => match changed {
                    Ok(()) => {
                        let current = *revision.borrow_and_update();
                        self.catch_up_all(current).await
                    }
                    Err(_) => Err(Closed),
                },
                _ = progress.tick() => self.notify_progress().await,
                _ = self.out.closed() => Err(Closed),
            };
            if step.is_err() {
                return;
            }
        }
    }

    fn current_revision(&self) -> u64 {
        *self.api.node.revision().borrow()
    }

    /// Queues `response` once the queue has room for it (or for [`STREAM_QUEUE_BYTES`],
    /// if it is larger), or fails once the client has gone.
    async fn send(&self, response: pb::WatchResponse) -> Result<(), Closed> {
        let bytes = prost::Message::encoded_len(&response).clamp(1, STREAM_QUEUE_BYTES);
        let room = self.reserve(bytes).await?;
        self.out.send((Ok(response), room)).await.map_err(|_| Closed)
    }

    /// Waits until `bytes` of the queue are free and takes them, or fails once the
    /// client has gone (its queued responses are then dropped, freeing their bytes).
    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Closed> {
        let bytes = u32::try_from(bytes).expect("bounded by STREAM_QUEUE_BYTES");
        tokio::select! {
            room = self.room.clone().acquire_many_owned(bytes) => room.map_err(|_| Closed),
            _ = self.out.closed() => Err(Closed),
        }
    }

    /// Ends the stream with `status` (the member is stopping).
    async fn fail(&self, status: Status) {
        if let Ok(room) = self.reserve(1).await {
            let _ = self.out.send((Err(status), room)).await;
        }
    }

    async fn handle(&mut self, req: pb::WatchRequest) -> Result<(), Closed> {
        use pb::watch_request::RequestUnion as U;
        match req.request_union {
            Some(U::CreateRequest(c)) => self.create(c).await,
            Some(U::CancelRequest(c)) => {
                // etcd answers only the cancel of a watcher that exists.
                if self.watchers.remove(&c.watch_id).is_some() {
                    let header = self.api.header(self.current_revision());
                    let r = pb::WatchResponse {
                        header,
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    self.send(r).await?;
                }
                Ok(())
            }
            Some(U::ProgressRequest(_)) => {
                // Deliver every event up to the revision reported first, so the client
                // may take the progress revision as "seen everything up to here".
                let current = self.current_revision();
                self.catch_up_all(current).await?;
                let r = pb::WatchResponse {
                    header: self.api.header(current),
                    watch_id: -1,
                    ..Default::default()
                };
                self.send(r).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Result<(), Closed> {
        let current = self.current_revision();
        let header = self.api.header(current);
        let key = if c.key.is_empty() { vec![0] } else { c.key.to_vec() };
        let range_end = c.range_end.to_vec();
        let refused = if let Some(denied) = self.permission_refusal(&key, &range_end).await {
            Some(denied)
        } else if c.watch_id != 0 && self.watchers.contains_key(&c.watch_id) {
            Some(DUPLICATE_ID.to_string())
        } else if range_end.len() > 1 || range_end.first().is_some_and(|&b| b != 0) {
            (range_end <= key).then(|| EMPTY_RANGE.to_string())
        } else {
            None
        };
        if let Some(reason) = refused {
            let r = pb::WatchResponse {
                header,
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            };
            return self.send(r).await;
        }
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        use pb::watch_create_request::FilterType;
        let next_revision =
            if c.start_revision <= 0 { current + 1 } else { c.start_revision as u64 };
        let watcher = Watcher {
            key,
            range_end,
            next_revision,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            last_sent: Instant::now(),
        };
        self.watchers.insert(id, watcher);
        let r = pb::WatchResponse { header, watch_id: id, created: true, ..Default::default() };
        self.send(r).await?;
        self.catch_up(id).await
    }

    /// Why the stream's caller may not watch the range, as etcd's cancel reason
    /// (the whole gRPC status text), if it may not.
    async fn permission_refusal(&self, key: &[u8], range_end: &[u8]) -> Option<String> {
        let user = self.connection_user.as_ref();
        let checked = match self.api.caller(&self.metadata, user).await {
            Ok((stamp, state)) => {
                state.check_range(&stamp, key, range_end, kv::PermissionType::Read)
            }
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                Err(kv::AuthError::InvalidToken)
            }
            Err(status) => return Some(status.message().to_string()),
        };
        checked.err().map(crate::auth::cancel_reason)
    }

    async fn catch_up_all(&mut self, current: u64) -> Result<(), Closed> {
        let behind: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.next_revision <= current)
            .map(|(id, _)| *id)
            .collect();
        for id in behind {
            self.catch_up(id).await?;
        }
        Ok(())
    }

    /// Sends watcher `id` every event from its next revision to the member's current
    /// one, batch by batch.
    async fn catch_up(&mut self, id: i64) -> Result<(), Closed> {
        loop {
            // A slow client's watchers wait here, behind, instead of fetching batches
            // the member would have to hold for it.
            drop(self.reserve(FETCH_ROOM_BYTES).await?);
            let Some(w) = self.watchers.get(&id) else { return Ok(()) };
            let (key, range_end, from) = (w.key.clone(), w.range_end.clone(), w.next_revision);
            let batch = self.api.node.events(key, range_end, from, w.prev_kv).await;
            let batch = match batch {
                None => {
                    self.fail(Status::unavailable("member stopping")).await;
                    return Err(Closed);
                }
                Some(Err(kv::KvError::Compacted { compact_revision, .. })) => {
                    self.watchers.remove(&id);
                    let r = pb::WatchResponse {
                        header: self.api.header(self.current_revision()),
                        watch_id: id,
                        canceled: true,
                        compact_revision: compact_revision as i64,
                        cancel_reason: COMPACTED.to_string(),
                        ..Default::default()
                    };
                    return self.send(r).await;
                }
                Some(Err(e)) => {
                    self.watchers.remove(&id);
                    let r = pb::WatchResponse {
                        header: self.api.header(self.current_revision()),
                        watch_id: id,
                        canceled: true,
                        cancel_reason: format!("etcdserver: {e}"),
                        ..Default::default()
                    };
                    return self.send(r).await;
                }
                Some(Ok(batch)) => batch,
            };
            let w = self.watchers.get(&id).expect("still watching");
            let events: Vec<mvccpb::Event> = batch
                .events
                .iter()
                .filter(|e| match e.kind {
                    kv::EventKind::Put => !w.no_put,
                    kv::EventKind::Delete => !w.no_delete,
                })
                .map(event)
                .collect();
            let fragment = w.fragment;
            let sent_any = !events.is_empty();
            for r in responses(id, events, fragment) {
                self.send(pb::WatchResponse { header: self.api.header(batch.revision), ..r })
                    .await?;
            }
            let w = self.watchers.get_mut(&id).expect("still watching");
            assert!(batch.next_revision >= w.next_revision, "a watcher never goes back");
            assert!(
                batch.next_revision > from || batch.next_revision > batch.revision,
                "a catch-up batch either advances or says the watcher is caught up"
            );
            w.next_revision = batch.next_revision;
            if sent_any {
                w.last_sent = Instant::now();
            }
            if batch.next_revision > batch.revision {
                return Ok(());
            }
        }
    }

    /// etcd's `progress_notify`: a watcher that has sent nothing for a while hears the
    /// revision it has caught up to.
    async fn notify_progress(&mut self) -> Result<(), Closed> {
        let current = self.current_revision();
        self.catch_up_all(current).await?;
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && w.last_sent.elapsed() >= PROGRESS_NOTIFY_INTERVAL)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let w = self.watchers.get_mut(&id).expect("listed");
            w.last_sent = Instant::now();
            let revision = w.next_revision.saturating_sub(1).min(current);
            let r = pb::WatchResponse {
                header: self.api.header(revision),
                watch_id: id,
                ..Default::default()
            };
            self.send(r).await?;
        }
        Ok(())
    }
}

/// kv event → etcd event.
fn event(e: &kv::Event) -> mvccpb::Event {
    let kind = match e.kind {
        kv::EventKind::Put => mvccpb::event::EventType::Put,
        kv::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value(&e.kv)),
        prev_kv: e.prev_kv.as_ref().map(key_value),
    }
}

fn revision_of(e: &mvccpb::Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

fn event_bytes(e: &mvccpb::Event) -> usize {
    prost::Message::encoded_len(e)
}

/// Cuts a watcher's events (in revision order) into responses of whole revisions of
/// at most about [`RESPONSE_EVENT_BYTES_MAX`]; a revision larger than that goes alone,
/// split into fragments if the watcher asked (`fragment` set on all but the last).
/// Headers are left for the caller.
fn responses(id: i64, events: Vec<mvccpb::Event>, fragment: bool) -> Vec<pb::WatchResponse> {
    let mut out = Vec::new();
    let mut current: Vec<mvccpb::Event> = Vec::new();
    let mut current_bytes = 0;
    let mut events = events.into_iter().peekable();
    let response = |events| pb::WatchResponse { watch_id: id, events, ..Default::default() };
    while let Some(first) = events.next() {
        // Gather one revision.
        let rev = revision_of(&first);
        let mut group = vec![first];
        while events.peek().is_some_and(|e| revision_of(e) == rev) {
            group.push(events.next().expect("peeked"));
        }
        let group_bytes: usize = group.iter().map(event_bytes).sum();
        if !current.is_empty() && current_bytes + group_bytes > RESPONSE_EVENT_BYTES_MAX {
            out.push(response(std::mem::take(&mut current)));
            current_bytes = 0;
        }
        if group_bytes > RESPONSE_EVENT_BYTES_MAX && fragment {
            let mut piece = Vec::new();
            let mut piece_bytes = 0;
            for e in group {
                let b = event_bytes(&e);
                if !piece.is_empty() && piece_bytes + b > RESPONSE_EVENT_BYTES_MAX {
                    out.push(pb::WatchResponse { fragment: true, ..response(piece) });
                    piece = Vec::new();
                    piece_bytes = 0;
                }
                piece_bytes += b;
                piece.push(e);
            }
            out.push(response(piece));
            continue;
        }
        current_bytes += group_bytes;
        current.extend(group);
    }
    if !current.is_empty() {
        out.push(response(current));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: i64, value_bytes: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: bytes::Bytes::from(format!("k{rev}")),
                mod_revision: rev,
                value: bytes::Bytes::from(vec![b'x'; value_bytes]),
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    /// A client resumes from the last revision it saw + 1, so a response must never
    /// end in the middle of a revision (fragments aside, which it reassembles).
    #[test]
    fn responses_never_split_a_revision() {
        let big = RESPONSE_EVENT_BYTES_MAX / 3;
        let events = vec![ev(2, big), ev(2, big), ev(3, big), ev(3, big), ev(4, 10)];
        let rs = responses(7, events, false);
        assert_eq!(rs.len(), 2);
        for r in &rs {
            assert_eq!(r.watch_id, 7);
            assert!(!r.fragment);
        }
        let revs: Vec<Vec<i64>> =
            rs.iter().map(|r| r.events.iter().map(revision_of).collect()).collect();
        assert_eq!(revs, vec![vec![2, 2], vec![3, 3, 4]]);
    }

    #[test]
    fn an_oversized_revision_is_fragmented_only_on_request() {
        let big = RESPONSE_EVENT_BYTES_MAX / 2 + 1;
        let events = || vec![ev(5, big), ev(5, big), ev(5, big)];
        assert_eq!(responses(1, events(), false).len(), 1);
        let rs = responses(1, events(), true);
        assert_eq!(rs.len(), 3);
        assert!(rs[0].fragment && rs[1].fragment && !rs[2].fragment);
    }
}
