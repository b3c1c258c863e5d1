//! The receiving side's guard on peer input: which member a peer stream speaks for, and
//! which of its messages reach the node thread.
//!
//! Why: the peer port is open to anyone who can reach it, and a peer's bytes are input
//! like a client's. Every stream names the member it speaks for when it opens (gRPC
//! metadata [`MEMBER_HEADER`], sent by [`crate::peer`]'s sending side); the stream is
//! refused unless that is a known member other than us. From then on a message whose
//! `from` differs from the stream's member, or whose fields fail
//! [`raft::validate::check_message`] (terms, indices, entry counts, snapshot sizes and
//! chunk offsets), is dropped, counted (`raftkv_peer_messages_invalid_total`) and logged
//! at most once per member per [`REJECT_LOG_INTERVAL`], so a hostile stream cannot
//! flood the log either.
//!
//! What this does not do without TLS: check that the caller *is* the member it names.
//! Anyone who reaches the port can still open a stream in a member's name and send
//! well-formed messages; what it can no longer do is crash a member, make it allocate
//! what a message claims, speak for two members on one stream, or (see
//! [`crate::peer::ClientUrls`]) change what `MemberList` shows. With TLS the member a
//! stream names is to be checked against the peer certificate here, in
//! [`stream_member`].

use crate::metrics::Metrics;
use proto::peer::PeerMember;
use raft::{Message, NodeId, PeerLimits};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::Status;

/// gRPC metadata on a peer stream naming (in hex, as etcd prints member ids) the member
/// the stream speaks for.
pub const MEMBER_HEADER: &str = "raftkv-member-id";
/// Shortest time between two log lines about one member's dropped messages.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Smallest limit on a snapshot received from a leader: raft's default, 16 GiB.
pub const SNAPSHOT_BYTES_MAX_MIN: u64 = 16 << 30;

/// The largest snapshot this member accepts from a leader, from the space quota: four
/// times the quota (a snapshot holds the state the quota measures, plus history and
/// sessions), at least [`SNAPSHOT_BYTES_MAX_MIN`]; without a quota, no limit beyond
/// memory (the follower only holds the bytes that actually arrived, never what a chunk
/// announces). A derived value rather than a flag: a legitimate snapshot must always
/// fit, and the quota already says how large the state may grow.
pub fn snapshot_bytes_max(quota_bytes: Option<u64>) -> u64 {
    quota_bytes.map_or(u64::MAX, |q| q.saturating_mul(4).max(SNAPSHOT_BYTES_MAX_MIN))
}

/// The cluster's members as this member has applied them (kept up to date from the node
/// by the server), sorted by id: whose peer streams are accepted, who is dialled, what
/// `MemberList` shows. A member removed from it is refused from then on, even on a
/// stream it opened before: that keeps a removed member that missed its removal from
/// disturbing the cluster (its votes would raise terms).
#[derive(Clone, Default)]
pub struct MemberTable(Arc<RwLock<Vec<PeerMember>>>, Arc<RwLock<Vec<NodeId>>>);

impl MemberTable {
    /// A table of `members`.
    pub fn new(members: Vec<PeerMember>) -> Self {
        let table = MemberTable::default();
        table.set(members);
        table
    }

    /// Replaces the members; true if they changed.
    pub fn set(&self, mut members: Vec<PeerMember>) -> bool {
        members.sort_by_key(|m| m.id);
        let mut table = self.0.write().expect("member table lock");
        let changed = *table != members;
        *table = members;
        changed
    }

    /// Records the ids of the members removed from the cluster.
    pub fn set_removed(&self, ids: Vec<NodeId>) {
        *self.1.write().expect("removed ids lock") = ids;
    }

    /// Whether `id` was a member and has been removed.
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.1.read().expect("removed ids lock").contains(&id)
    }

    /// Every member, sorted by id.
    pub fn members(&self) -> Vec<PeerMember> {
        self.0.read().expect("member table lock").clone()
    }

    /// Member `id`'s record.
    pub fn get(&self, id: NodeId) -> Option<PeerMember> {
        self.0.read().expect("member table lock").iter().find(|m| m.id == id).cloned()
    }

    /// Whether `id` is a member, and a learner (checked on every client request of a
    /// learner, so it reads in place rather than cloning the record).
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.0.read().expect("member table lock").iter().any(|m| m.id == id && m.is_learner)
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.0.read().expect("member table lock").iter().any(|m| m.id == id)
    }

    /// Every member's id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.0.read().expect("member table lock").iter().map(|m| m.id).collect()
    }
}

/// The member a stream speaks for, from its [`MEMBER_HEADER`]: a known member that is
/// not this one, or the stream is refused.
pub fn stream_member<T>(
    request: &tonic::Request<T>,
    members: &[NodeId],
    me: NodeId,
) -> Result<NodeId, Status> {
    let named = request.metadata().get(MEMBER_HEADER).and_then(|v| v.to_str().ok());
    let id = named.and_then(|v| u64::from_str_radix(v, 16).ok());
    match id {
        Some(id) if id != me && members.contains(&id) => Ok(id),
        _ => Err(Status::unauthenticated(format!(
            "peer stream must name a member of this cluster other than {me:x} in metadata \
             {MEMBER_HEADER} (got {named:?}): check --initial-cluster on both members"
        ))),
    }
}

/// Checks each message of one stream and keeps the bounded log of what it dropped.
pub struct Guard {
    me: NodeId,
    limits: PeerLimits,
    /// Per stream member: when its drops were last logged, and drops since.
    log: Mutex<HashMap<NodeId, (Instant, u64)>>,
}

impl Guard {
    /// A guard for member `me` with the core's `limits`.
    pub fn new(me: NodeId, limits: PeerLimits) -> Self {
        Guard { me, limits, log: Mutex::new(HashMap::new()) }
    }

    /// True if `m`, received on `member`'s stream, may go to the node thread; otherwise
    /// counts it in `metrics` and logs why (bounded).
    pub fn admit(&self, member: NodeId, m: &Message, metrics: &Metrics) -> bool {
        let why = if m.from != member {
            format!("sender {:x} differs from the stream's member", m.from)
        } else {
            match raft::validate::check_message(m, self.me, &self.limits) {
                Ok(()) => return true,
                Err(e) => e.to_string(),
            }
        };
        self.reject(member, m.kind_name(), &why, metrics);
        false
    }

    /// Counts and (bounded) logs one dropped message on `member`'s stream; `what` names
    /// it and `why` says what was wrong. Also used for messages that do not decode.
    pub fn reject(&self, member: NodeId, what: &str, why: &str, metrics: &Metrics) {
        metrics.peer_messages_invalid.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut log = self.log.lock().expect("peer reject log lock");
        let (last, suppressed) = log.entry(member).or_insert((now - REJECT_LOG_INTERVAL, 0));
        if now.duration_since(*last) < REJECT_LOG_INTERVAL {
            *suppressed += 1;
            return;
        }
        tracing::warn!(
            member = format_args!("{member:x}"),
            message = what,
            reason = why,
            dropped_since_last_report = *suppressed,
            "dropped an invalid peer message"
        );
        *last = now;
        *suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::MessageBody;

    fn limits() -> PeerLimits {
        raft::Config::new(1).peer_limits()
    }

    fn request(header: Option<&str>) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert(MEMBER_HEADER, h.parse().unwrap());
        }
        r
    }

    #[test]
    fn snapshot_limit_follows_the_quota_with_a_generous_floor() {
        assert_eq!(snapshot_bytes_max(Some(2 << 30)), 16 << 30);
        assert_eq!(snapshot_bytes_max(Some(8 << 30)), 32 << 30);
        assert_eq!(snapshot_bytes_max(Some(u64::MAX)), u64::MAX);
        assert_eq!(snapshot_bytes_max(None), u64::MAX);
    }

    #[test]
    fn a_stream_speaks_for_one_known_member_other_than_us() {
        let members = [1, 2, 0xab];
        assert_eq!(stream_member(&request(Some("ab")), &members, 1).unwrap(), 0xab);
        for bad in [None, Some("1"), Some("7"), Some("zz"), Some("")] {
            let err = stream_member(&request(bad), &members, 1).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(err.message().contains(MEMBER_HEADER), "{}", err.message());
        }
    }

    #[test]
    fn messages_in_another_members_name_or_out_of_bounds_are_dropped_and_counted() {
        let guard = Guard::new(1, limits());
        let metrics = Metrics::default();
        let beat = |from, term| Message {
            from,
            to: 1,
            term,
            body: MessageBody::Heartbeat { commit: 0, read_round: 0 },
        };
        assert!(guard.admit(2, &beat(2, 5), &metrics));
        assert!(!guard.admit(2, &beat(3, 5), &metrics), "speaks for member 3 on 2's stream");
        assert!(!guard.admit(2, &beat(2, u64::MAX), &metrics), "term out of bounds");
        assert_eq!(metrics.peer_messages_invalid.load(Ordering::Relaxed), 2);
        // The log is bounded: one line per member per interval, the rest counted.
        assert_eq!(guard.log.lock().unwrap()[&2].1, 1, "second drop suppressed");
    }
}
