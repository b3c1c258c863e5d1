//! Conversions between the Raft core's messages ([`raft::Message`]) and their wire form
//! ([`crate::peer::Message`]).
//!
//! Encoding (`From<&raft::Message>`) is total: every core message has a wire form.
//! Decoding (`TryFrom<peer::Message>`) takes bytes from the network, so it trusts
//! nothing. Besides the plainly malformed (no body, an unknown entry kind, a missing
//! snapshot description) it rejects the shapes the core asserts on or would misread:
//! node id 0, append entries that do not run on from `prev_index + 1`, entry terms
//! that go backwards or beyond the sender's term, snapshot chunks outside their
//! snapshot, and voter sets with 0 or duplicates. What a well-formed message *means*
//! (a stale term, a log that does not match) stays the core's business.
//!
//! Copies: entry data and snapshot chunks go out without a copy (the core's
//! `Arc<[u8]>` becomes the owner of a [`Bytes`]); coming in, they are copied once
//! into a fresh `Arc<[u8]>`, the type the core holds.

use crate::peer as pb;
use crate::peer::message::Body;
use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, Message, MessageBody, RejectHint, SnapshotMeta};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// Why a peer message could not be turned into a [`raft::Message`]. Each one means the
/// sender is broken or not a raftkv member of this version; the receiver should drop
/// the stream with this text rather than step the message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConvertError {
    /// The message's `body` is unset, or holds a kind this build does not know (a
    /// newer peer's kind decodes as unset, since protobuf skips unknown fields).
    MissingBody,
    /// A sub-message the core needs is absent; names the field.
    MissingField(&'static str),
    /// A node id is 0, which the core reserves for "none"; names the field.
    ZeroNodeId(&'static str),
    /// An entry kind that is unset (0) or unknown to this build.
    UnknownEntryKind(i32),
    /// An append's entries do not run on from `prev_index + 1` one by one.
    EntriesNotContiguous {
        /// The index the entry should have had.
        expected_index: u64,
        /// The index it had.
        found_index: u64,
    },
    /// An append's last entry index does not fit in a `u64`.
    IndexOverflow,
    /// An entry term below the previous one (or `prev_term`), or above the sender's
    /// term: no leader's log looks like that (Raft §5.3).
    EntryTermOutOfOrder {
        /// Index of the offending entry.
        index: u64,
        /// Its term.
        term: u64,
        /// Lowest term allowed there.
        min_term: u64,
        /// Highest term allowed (the message's term).
        max_term: u64,
    },
    /// A snapshot chunk that ends past `total_bytes`, or whose `done` flag disagrees
    /// with whether it ends exactly at `total_bytes`.
    BadSnapshotChunk {
        /// The chunk's offset.
        offset: u64,
        /// The chunk's length in bytes.
        len: u64,
        /// The snapshot's announced size.
        total_bytes: u64,
        /// The chunk's `done` flag.
        done: bool,
    },
    /// A member list of a configuration that names the same member twice.
    DuplicateVoter(u64),
    /// A configuration that lists a member both as a voter and as a learner.
    LearnerIsVoter(u64),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::MissingBody => {
                write!(f, "peer message has no body, or one of a kind this member does not know")
            }
            ConvertError::MissingField(field) => write!(f, "peer message lacks `{field}`"),
            ConvertError::ZeroNodeId(field) => {
                write!(f, "peer message has node id 0 in `{field}` (0 means none)")
            }
            ConvertError::UnknownEntryKind(kind) => {
                write!(f, "log entry has unknown or unset kind {kind}")
            }
            ConvertError::EntriesNotContiguous { expected_index, found_index } => write!(
                f,
                "append entries are not contiguous: expected index {expected_index}, \
                 found {found_index}"
            ),
            ConvertError::IndexOverflow => write!(f, "append entries run past index u64::MAX"),
            ConvertError::EntryTermOutOfOrder { index, term, min_term, max_term } => write!(
                f,
                "entry {index} has term {term}, outside [{min_term}, {max_term}] \
                 (terms never decrease along a log nor exceed the sender's term)"
            ),
            ConvertError::BadSnapshotChunk { offset, len, total_bytes, done } => write!(
                f,
                "snapshot chunk of {len} bytes at offset {offset} does not fit a \
                 {total_bytes}-byte snapshot with done={done}"
            ),
            ConvertError::DuplicateVoter(id) => write!(f, "member {id} is listed twice"),
            ConvertError::LearnerIsVoter(id) => {
                write!(f, "member {id} is listed both as a voter and as a learner")
            }
        }
    }
}

impl std::error::Error for ConvertError {}

// ---- Encoding: core -> wire ----

/// The core's bytes as a [`Bytes`] that shares the allocation instead of copying it.
fn shared_bytes(data: &Arc<[u8]>) -> Bytes {
    if data.is_empty() {
        Bytes::new()
    } else {
        Bytes::from_owner(Arc::clone(data))
    }
}

fn entry_kind_to_wire(kind: EntryKind) -> pb::EntryKind {
    match kind {
        EntryKind::Normal => pb::EntryKind::Normal,
        EntryKind::Noop => pb::EntryKind::Noop,
        EntryKind::ConfChange => pb::EntryKind::ConfChange,
    }
}

impl From<&Entry> for pb::Entry {
    fn from(e: &Entry) -> Self {
        pb::Entry {
            term: e.term,
            index: e.index,
            kind: entry_kind_to_wire(e.kind) as i32,
            data: shared_bytes(&e.data),
        }
    }
}

impl From<&SnapshotMeta> for pb::SnapshotMeta {
    fn from(meta: &SnapshotMeta) -> Self {
        pb::SnapshotMeta {
            index: meta.index,
            term: meta.term,
            conf: Some(conf_to_wire(&meta.conf)),
        }
    }
}

fn conf_to_wire(conf: &ConfState) -> pb::ConfState {
    let list = |set: &BTreeSet<u64>| set.iter().copied().collect();
    pb::ConfState {
        voters: list(&conf.voters),
        voters_outgoing: list(&conf.voters_outgoing),
        learners: list(&conf.learners),
        learners_next: list(&conf.learners_next),
    }
}

impl From<RejectHint> for pb::RejectHint {
    fn from(h: RejectHint) -> Self {
        pb::RejectHint {
            conflict_term: h.conflict_term,
            conflict_first_index: h.conflict_first_index,
            log_len: h.log_len,
        }
    }
}

impl From<&MessageBody> for Body {
    fn from(body: &MessageBody) -> Self {
        match body {
            &MessageBody::PreVote { last_index, last_term } => {
                Body::PreVote(pb::VoteRequest { last_index, last_term, transfer: false })
            }
            &MessageBody::PreVoteResp { reject } => Body::PreVoteResp(pb::VoteResponse { reject }),
            &MessageBody::Vote { last_index, last_term, transfer } => {
                Body::Vote(pb::VoteRequest { last_index, last_term, transfer })
            }
            &MessageBody::VoteResp { reject } => Body::VoteResp(pb::VoteResponse { reject }),
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                Body::Append(pb::AppendRequest {
                    prev_index: *prev_index,
                    prev_term: *prev_term,
                    entries: entries.iter().map(pb::Entry::from).collect(),
                    commit: *commit,
                })
            }
            &MessageBody::AppendResp { index, reject } => Body::AppendResp(pb::AppendResponse {
                index,
                reject: reject.map(pb::RejectHint::from),
            }),
            &MessageBody::Heartbeat { commit, read_round } => {
                Body::Heartbeat(pb::HeartbeatRequest { commit, read_round })
            }
            &MessageBody::HeartbeatResp { read_round } => {
                Body::HeartbeatResp(pb::HeartbeatResponse { read_round })
            }
            MessageBody::Snapshot { meta, offset, total_bytes, chunk, done } => {
                Body::Snapshot(pb::SnapshotChunk {
                    meta: Some(pb::SnapshotMeta::from(meta)),
                    offset: *offset,
                    total_bytes: *total_bytes,
                    chunk: shared_bytes(chunk),
                    done: *done,
                })
            }
            &MessageBody::SnapshotResp { snapshot_index, next_offset, done, last_index } => {
                Body::SnapshotResp(pb::SnapshotResponse {
                    snapshot_index,
                    next_offset,
                    done,
                    last_index,
                })
            }
            &MessageBody::ReadIndex { ctx } => Body::ReadIndex(pb::ReadIndexRequest { ctx }),
            &MessageBody::ReadIndexResp { ctx, index } => {
                Body::ReadIndexResp(pb::ReadIndexResponse { ctx, index })
            }
            MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNowRequest {}),
        }
    }
}

impl From<&Message> for pb::Message {
    fn from(m: &Message) -> Self {
        pb::Message { from: m.from, to: m.to, term: m.term, body: Some(Body::from(&m.body)) }
    }
}

// ---- Decoding: wire -> core ----

impl TryFrom<pb::Entry> for Entry {
    type Error = ConvertError;

    fn try_from(e: pb::Entry) -> Result<Self, ConvertError> {
        let kind = match pb::EntryKind::try_from(e.kind) {
            Ok(pb::EntryKind::Normal) => EntryKind::Normal,
            Ok(pb::EntryKind::Noop) => EntryKind::Noop,
            Ok(pb::EntryKind::ConfChange) => EntryKind::ConfChange,
            Ok(pb::EntryKind::Unspecified) | Err(_) => {
                return Err(ConvertError::UnknownEntryKind(e.kind))
            }
        };
        Ok(Entry { term: e.term, index: e.index, kind, data: Arc::from(&e.data[..]) })
    }
}

impl TryFrom<pb::SnapshotMeta> for SnapshotMeta {
    type Error = ConvertError;

    fn try_from(meta: pb::SnapshotMeta) -> Result<Self, ConvertError> {
        let conf = meta.conf.ok_or(ConvertError::MissingField("SnapshotMeta.conf"))?;
        let conf = ConfState {
            voters: member_set(conf.voters, "ConfState.voters")?,
            voters_outgoing: member_set(conf.voters_outgoing, "ConfState.voters_outgoing")?,
            learners: member_set(conf.learners, "ConfState.learners")?,
            learners_next: member_set(conf.learners_next, "ConfState.learners_next")?,
        };
        let voters = conf.all_voters();
        if let Some(&id) = conf.learners.iter().find(|id| voters.contains(id)) {
            return Err(ConvertError::LearnerIsVoter(id));
        }
        Ok(SnapshotMeta { index: meta.index, term: meta.term, conf })
    }
}

/// One member list of a ConfState: no 0, no member twice.
fn member_set(ids: Vec<u64>, field: &'static str) -> Result<BTreeSet<u64>, ConvertError> {
    let mut set = BTreeSet::new();
    for id in ids {
        if id == 0 {
            return Err(ConvertError::ZeroNodeId(field));
        }
        if !set.insert(id) {
            return Err(ConvertError::DuplicateVoter(id));
        }
    }
    Ok(set)
}

impl From<pb::RejectHint> for RejectHint {
    fn from(h: pb::RejectHint) -> Self {
        RejectHint {
            conflict_term: h.conflict_term,
            conflict_first_index: h.conflict_first_index,
            log_len: h.log_len,
        }
    }
}

/// An append's entries as the core may take them: contiguous from `prev_index + 1`,
/// terms never decreasing from `prev_term`, none above the sender's `term`.
fn append_from_wire(term: u64, a: pb::AppendRequest) -> Result<MessageBody, ConvertError> {
    let mut entries = Vec::with_capacity(a.entries.len());
    let mut expected_index = a.prev_index;
    let mut min_term = a.prev_term;
    for wire in a.entries {
        expected_index = expected_index.checked_add(1).ok_or(ConvertError::IndexOverflow)?;
        let entry = Entry::try_from(wire)?;
        if entry.index != expected_index {
            return Err(ConvertError::EntriesNotContiguous {
                expected_index,
                found_index: entry.index,
            });
        }
        if entry.term < min_term || entry.term > term {
            return Err(ConvertError::EntryTermOutOfOrder {
                index: entry.index,
                term: entry.term,
                min_term,
                max_term: term,
            });
        }
        min_term = entry.term;
        entries.push(entry);
    }
    Ok(MessageBody::Append {
        prev_index: a.prev_index,
        prev_term: a.prev_term,
        entries,
        commit: a.commit,
    })
}

/// A snapshot chunk that lies inside its snapshot, `done` exactly on the last one.
fn snapshot_from_wire(s: pb::SnapshotChunk) -> Result<MessageBody, ConvertError> {
    let meta = s.meta.ok_or(ConvertError::MissingField("SnapshotChunk.meta"))?;
    let meta = SnapshotMeta::try_from(meta)?;
    let len = s.chunk.len() as u64;
    let bad = ConvertError::BadSnapshotChunk {
        offset: s.offset,
        len,
        total_bytes: s.total_bytes,
        done: s.done,
    };
    let end = s.offset.checked_add(len).ok_or_else(|| bad.clone())?;
    if end > s.total_bytes || s.done != (end == s.total_bytes) {
        return Err(bad);
    }
    Ok(MessageBody::Snapshot {
        meta,
        offset: s.offset,
        total_bytes: s.total_bytes,
        chunk: Arc::from(&s.chunk[..]),
        done: s.done,
    })
}

impl TryFrom<pb::Message> for Message {
    type Error = ConvertError;

    fn try_from(m: pb::Message) -> Result<Self, ConvertError> {
        if m.from == 0 {
            return Err(ConvertError::ZeroNodeId("Message.from"));
        }
        if m.to == 0 {
            return Err(ConvertError::ZeroNodeId("Message.to"));
        }
        let body = match m.body.ok_or(ConvertError::MissingBody)? {
            Body::PreVote(v) => {
                MessageBody::PreVote { last_index: v.last_index, last_term: v.last_term }
            }
            Body::PreVoteResp(v) => MessageBody::PreVoteResp { reject: v.reject },
            Body::Vote(v) => MessageBody::Vote {
                last_index: v.last_index,
                last_term: v.last_term,
                transfer: v.transfer,
            },
            Body::VoteResp(v) => MessageBody::VoteResp { reject: v.reject },
            Body::Append(a) => append_from_wire(m.term, a)?,
            Body::AppendResp(r) => {
                MessageBody::AppendResp { index: r.index, reject: r.reject.map(RejectHint::from) }
            }
            Body::Heartbeat(h) => {
                MessageBody::Heartbeat { commit: h.commit, read_round: h.read_round }
            }
            Body::HeartbeatResp(h) => MessageBody::HeartbeatResp { read_round: h.read_round },
            Body::Snapshot(s) => snapshot_from_wire(s)?,
            Body::SnapshotResp(s) => MessageBody::SnapshotResp {
                snapshot_index: s.snapshot_index,
                next_offset: s.next_offset,
                done: s.done,
                last_index: s.last_index,
            },
            Body::ReadIndex(r) => MessageBody::ReadIndex { ctx: r.ctx },
            Body::ReadIndexResp(r) => MessageBody::ReadIndexResp { ctx: r.ctx, index: r.index },
            Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        };
        Ok(Message { from: m.from, to: m.to, term: m.term, body })
    }
}

impl pb::MessageBatch {
    /// A batch of the core's messages for the peer stream, stamped with `cluster_id`.
    pub fn from_raft<'a>(cluster_id: u64, messages: impl IntoIterator<Item = &'a Message>) -> Self {
        pb::MessageBatch {
            cluster_id,
            messages: messages.into_iter().map(pb::Message::from).collect(),
        }
    }

    /// The batch's messages for the core, in order. One malformed message rejects the
    /// whole batch: a peer that sends one is broken, and its stream should end.
    pub fn into_raft(self) -> Result<Vec<Message>, ConvertError> {
        self.messages.into_iter().map(Message::try_from).collect()
    }
}

#[cfg(test)]
mod tests;
