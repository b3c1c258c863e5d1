//! etcd's v3 client API over the node: the `KV` and `Maintenance` services, and the
//! translation between etcd's protobuf messages and the `kv` crate's types (`Watch`,
//! `Lease` and `Cluster` are in [`crate::watch`], [`crate::lease`] and [`crate::cluster`]).
//!
//! Writes go through the Raft log; a follower forwards them to the leader over the peer
//! transport. Linearizable reads use ReadIndex on whichever member the client talks to;
//! `serializable` reads are served from the member's local state. Our own client can tag
//! writes with a session (gRPC metadata `raftkv-client-id` and `raftkv-seq`) so a retried
//! write executes exactly once; requests without it behave as in etcd.

use crate::auth::Check;
use crate::metrics::Metrics;
use crate::peer::Transport;
use crate::runtime::{NodeHandle, Reply};
use bytes::Bytes;
use kv::{Command, KvError, Op};
use node::{ReadQuery, Request, RequestError, TransferFailure};
use proto::etcdserverpb as pb;
use proto::mvccpb;
use raft::NodeId;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

/// Snapshot chunks (32 KiB each) queued for a client before the serialiser waits.
const SNAPSHOT_CHUNKS_QUEUED: usize = 16;

/// etcd's default limit on one request (`--max-request-bytes`, 1.5 MiB).
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// Most operations in a txn's compares or either branch that apply accepts (etcd's
/// default `--max-txn-ops`): the most `--max-txn-ops` may be.
pub const TXN_OPS_MAX: u64 = 128;
/// The version string `Maintenance.Status` reports: the etcd API level, then ours.
pub const VERSION: &str = concat!("3.4.0+raftkv.", env!("CARGO_PKG_VERSION"));
/// The cluster version etcd 3.4 reports (`/version`, the snapshot's `clusterVersion`):
/// every raftkv member speaks the same API level, so it is fixed.
pub const CLUSTER_VERSION: &str = "3.4.0";

/// The body of `GET /version` on a client URL, etcd's JSON:
/// `{"etcdserver":"3.4.0+raftkv.X","etcdcluster":"3.4.0"}` (no newline, as etcd's).
pub fn version_json() -> String {
    format!("{{\"etcdserver\":\"{VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}\"}}")
}

/// etcd's message when a member has too much work queued (gRPC `ResourceExhausted`).
pub const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";

/// Metadata key carrying our client's session id.
pub const CLIENT_ID_HEADER: &str = "raftkv-client-id";
/// Metadata key carrying the write's sequence number in its session.
pub const SEQ_HEADER: &str = "raftkv-seq";

/// What the client-facing services share.
#[derive(Clone)]
pub struct Api {
    /// The node thread.
    pub node: NodeHandle,
    /// For forwarding writes to the leader.
    pub transport: Transport,
    /// For response headers.
    pub metrics: Arc<Metrics>,
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: NodeId,
    /// The members and their changes (the `Cluster` service, in [`crate::cluster`]).
    pub membership: crate::cluster::Membership,
    /// Shortest lease TTL granted, in seconds; shorter requests get this (etcd's
    /// minimum: 1.5 election timeouts, rounded up).
    pub lease_ttl_min_secs: i64,
    /// How long a write or a linearizable read may take in all, waits for a leader
    /// included (the node's request timeout; etcd's is 7 s with its defaults).
    pub request_timeout: std::time::Duration,
    /// The space quota (`--quota-backend-bytes`) checked before proposing a put, a
    /// txn or a lease grant; `None`: no quota.
    pub quota_bytes: Option<u64>,
    /// This member's auth tokens and password hashing (see [`crate::auth`]).
    pub auth: Arc<crate::auth::AuthGate>,
    /// `--max-request-bytes` and `--max-txn-ops`.
    pub limits: crate::config::RequestLimits,
}

impl Api {
    pub(crate) fn header(&self, revision: u64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: revision as i64,
            raft_term: self.metrics.term.load(Ordering::Relaxed),
        })
    }

    /// Runs a write: here if we lead, else forwarded to the leader.
    pub(crate) async fn write(&self, cmd: Command) -> Result<kv::Response, Status> {
        into_result(self.write_reply(cmd).await)
    }

    /// Runs a command on the leader: here if we lead, else forwarded to it. Everything
    /// (waiting for a leader, forwarding, waiting to apply it here) fits in one request
    /// timeout, as etcd's. `NotLeader` from the node or the leader means the write was
    /// not applied, so it is sent again; an unknown outcome is `Timeout`, never resent.
    pub(crate) async fn write_reply(&self, cmd: Command) -> Reply {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut reply: Reply = match self.leader_elsewhere() {
            Some(leader) => Err(RequestError::NotLeader { leader: Some(leader) }),
            None => self.node.request(Request::Write(cmd.clone())).await,
        };
        loop {
            let leader = match reply {
                Err(RequestError::NotLeader { leader }) => leader,
                done => return done,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(RequestError::Timeout);
            }
            match leader {
                Some(l) if l != self.member_id => {
                    let sent = std::time::Instant::now();
                    let (answer, leader_applied) = self.transport.forward(l, &cmd).await;
                    self.metrics.forward_seconds.observe(sent.elapsed().as_secs_f64());
                    if answer.is_ok() {
                        // As etcd's: answer once this member has applied the write too,
                        // so a serializable read here sees it. Past the deadline the
                        // write is still done: answer anyway.
                        let answered = std::time::Instant::now();
                        self.node.wait_applied(leader_applied, deadline).await;
                        let waited = answered.elapsed().as_secs_f64();
                        self.metrics.forward_apply_wait_seconds.observe(waited);
                    }
                    if let Err(RequestError::NotLeader { leader: None }) = answer {
                        tokio::time::sleep(NO_LEADER_RETRY).await;
                    }
                    reply = answer;
                }
                // No leader (an election, no quorum), or leadership came back here.
                _ => {
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                    reply = self.node.request(Request::Write(cmd.clone())).await;
                }
            }
        }
    }

    /// The leader, when this member follows a known one and its own node would not
    /// refuse the write (apply keeps up; the quota was checked by the caller): the
    /// write then goes straight to the leader instead of first asking this member's
    /// node thread, which may be inside a WAL sync, only to hear "not leader". Stale
    /// knowledge costs one round: the old leader answers `NotLeader` with the member it
    /// knows leads, and the write is sent there.
    fn leader_elsewhere(&self) -> Option<NodeId> {
        let m = &self.metrics;
        let leader = m.leader.load(Ordering::Relaxed);
        let apply_gap = m
            .commit_index
            .load(Ordering::Relaxed)
            .saturating_sub(m.applied_index.load(Ordering::Relaxed));
        let following = m.is_leader.load(Ordering::Relaxed) == 0;
        let known = leader != 0 && leader != self.member_id;
        (following && known && apply_gap <= DIRECT_FORWARD_APPLY_GAP_MAX).then_some(leader)
    }

    /// etcd's quota check, before proposing a put, a txn or a lease grant (its
    /// `quotaKVServer` and `quotaLeaseServer`): on this member, the one the client
    /// reached, with its own size estimate. A request that would take the state to
    /// the quota or past it is refused with etcd's NOSPACE error, and the NOSPACE
    /// alarm is raised for this member through the log unless it already is. The
    /// leader checks again before proposing (a follower's estimate may lag), and once
    /// the alarm is applied every member refuses such writes.
    pub(crate) async fn check_quota(&self, op: &Op) -> Result<(), Status> {
        let Some(quota) = self.quota_bytes else { return Ok(()) };
        let cost = kv::space_cost(op);
        let size = self.metrics.db_size_bytes.load(Ordering::Relaxed);
        if cost == 0 || size.saturating_add(cost) < quota {
            return Ok(());
        }
        let mine = kv::AlarmMember { member_id: self.member_id, alarm: kv::AlarmType::Nospace };
        let raised = self.node.status().await.is_some_and(|s| s.alarms.contains(&mine));
        if !raised {
            let activate = Op::Alarm {
                action: kv::AlarmAction::Activate,
                member_id: self.member_id,
                alarm: kv::AlarmType::Nospace,
            };
            if let Err(e) = self.write(Command::new(activate)).await {
                tracing::warn!(error = %e.message(), "raising the NOSPACE alarm failed");
            }
        }
        Err(kv_error(&KvError::NoSpace))
    }

    /// A read; a linearizable one waits out an election (no leader) for up to etcd's
    /// request timeout, then fails as etcd's does ("request timed out").
    pub(crate) async fn read(
        &self,
        query: ReadQuery,
        serializable: bool,
    ) -> Result<kv::Response, Status> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            let reply =
                self.node.request(Request::Read { query: query.clone(), serializable }).await;
            match reply {
                Err(RequestError::NotLeader { leader: None }) if !serializable => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(request_error(&RequestError::Timeout));
                    }
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                reply => return into_result(reply),
            }
        }
    }
}

/// A follower whose commit index runs further than this ahead of its applied index
/// asks its node thread before forwarding a write (which refuses it, as etcd does, once
/// the gap passes the node's own limit of 5000).
const DIRECT_FORWARD_APPLY_GAP_MAX: u64 = 1000;

/// How often a write or linearizable read without a leader asks again.
const NO_LEADER_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

pub(crate) fn into_result(reply: Reply) -> Result<kv::Response, Status> {
    match reply {
        Ok(kv::Response::Error(e)) => Err(kv_error(&e)),
        Ok(r) => Ok(r),
        Err(e) => Err(request_error(&e)),
    }
}

/// etcd's gRPC code and message for a state machine error.
pub fn kv_error(e: &KvError) -> Status {
    match e {
        KvError::EmptyKey => Status::invalid_argument("etcdserver: key is not provided"),
        KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. } => {
            Status::invalid_argument("etcdserver: request is too large")
        }
        KvError::KeyNotFound { .. } => Status::invalid_argument("etcdserver: key not found"),
        KvError::Compacted { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        KvError::FutureRevision { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        KvError::TooManyOps { .. } => {
            Status::invalid_argument("etcdserver: too many operations in txn request")
        }
        KvError::DuplicateKeyInTxn { .. } => {
            Status::invalid_argument("etcdserver: duplicate key given in txn request")
        }
        KvError::LeaseNotFound { .. } => Status::not_found("etcdserver: requested lease not found"),
        KvError::LeaseExists { .. } => {
            Status::failed_precondition("etcdserver: lease already exists")
        }
        KvError::LeaseTtlTooLarge { .. } => Status::out_of_range("etcdserver: too large lease TTL"),
        KvError::NoSpace => Status::resource_exhausted("etcdserver: mvcc: database space exceeded"),
        KvError::Corrupt => Status::data_loss("etcdserver: corrupt cluster"),
        KvError::Auth(a) => crate::auth::auth_status(*a),
        other => Status::invalid_argument(format!("etcdserver: {other}")),
    }
}

/// etcd's gRPC code and message for a request the node could not serve.
pub fn request_error(e: &RequestError) -> Status {
    match e {
        RequestError::NotLeader { leader: None } => Status::unavailable("etcdserver: no leader"),
        RequestError::NotLeader { leader: Some(_) } => {
            Status::unavailable("etcdserver: leader changed")
        }
        RequestError::Timeout => Status::unavailable("etcdserver: request timed out"),
        RequestError::TooLarge { .. } => {
            Status::invalid_argument("etcdserver: request is too large")
        }
        // etcd's ErrGRPCTooManyRequests.
        RequestError::Busy => Status::resource_exhausted(TOO_MANY_REQUESTS),
        // etcd's ErrGRPCNotCapable, its answer to a request the cluster's version lacks.
        RequestError::NotCapable => Status::unavailable("etcdserver: not capable"),
    }
}

/// etcd's gRPC status for a failed leadership transfer: `FailedPrecondition` for "not
/// leader" and "bad leader transferee", `Unavailable` for a transfer that took too long.
pub fn transfer_error(e: &TransferFailure) -> Status {
    match e {
        TransferFailure::NotLeader { .. }
        | TransferFailure::BadTransferee(_)
        | TransferFailure::NoTransferee => Status::failed_precondition(e.to_string()),
        TransferFailure::TimedOut | TransferFailure::InProgress => {
            Status::unavailable(e.to_string())
        }
    }
}

fn non_negative(field: &str, v: i64) -> Result<u64, Status> {
    u64::try_from(v).map_err(|_| {
        Status::invalid_argument(format!("etcdserver: {field} must not be negative (got {v})"))
    })
}

/// etcd request → kv request.
pub fn range_request(r: &pb::RangeRequest) -> Result<kv::RangeRequest, Status> {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    let sort_order = match O::try_from(r.sort_order) {
        Ok(O::None) => kv::SortOrder::None,
        Ok(O::Ascend) => kv::SortOrder::Ascend,
        Ok(O::Descend) => kv::SortOrder::Descend,
        Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort order")),
    };
    let sort_target = match T::try_from(r.sort_target) {
        Ok(T::Key) => kv::SortTarget::Key,
        Ok(T::Version) => kv::SortTarget::Version,
        Ok(T::Create) => kv::SortTarget::Create,
        Ok(T::Mod) => kv::SortTarget::Mod,
        Ok(T::Value) => kv::SortTarget::Value,
        Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort target")),
    };
    Ok(kv::RangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        limit: non_negative("limit", r.limit)?,
        revision: non_negative("revision", r.revision)?,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: non_negative("min_mod_revision", r.min_mod_revision)?,
        max_mod_revision: non_negative("max_mod_revision", r.max_mod_revision)?,
        min_create_revision: non_negative("min_create_revision", r.min_create_revision)?,
        max_create_revision: non_negative("max_create_revision", r.max_create_revision)?,
    })
}

fn put_request(r: &pb::PutRequest) -> Result<kv::PutRequest, Status> {
    // etcd refuses a value or lease that an ignore flag would drop.
    if r.ignore_value && !r.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(kv::PutRequest {
        key: r.key.to_vec(),
        value: r.value.to_vec(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    })
}

fn delete_request(r: &pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        prev_kv: r.prev_kv,
    }
}

fn compare(c: &pb::Compare) -> Result<kv::Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => kv::CompareResult::Equal,
        Ok(R::Greater) => kv::CompareResult::Greater,
        Ok(R::Less) => kv::CompareResult::Less,
        Ok(R::NotEqual) => kv::CompareResult::NotEqual,
        Err(_) => return Err(Status::invalid_argument("etcdserver: invalid compare result")),
    };
    // etcd reads the target from `target`, and the value from the union.
    let u = c.target_union.clone();
    let target = match (T::try_from(c.target), u) {
        (Ok(T::Version), Some(U::Version(v))) => {
            kv::CompareTarget::Version(non_negative("version", v)?)
        }
        (Ok(T::Version), None) => kv::CompareTarget::Version(0),
        (Ok(T::Create), Some(U::CreateRevision(v))) => {
            kv::CompareTarget::CreateRevision(non_negative("create_revision", v)?)
        }
        (Ok(T::Create), None) => kv::CompareTarget::CreateRevision(0),
        (Ok(T::Mod), Some(U::ModRevision(v))) => {
            kv::CompareTarget::ModRevision(non_negative("mod_revision", v)?)
        }
        (Ok(T::Mod), None) => kv::CompareTarget::ModRevision(0),
        (Ok(T::Value), Some(U::Value(v))) => kv::CompareTarget::Value(v.to_vec()),
        (Ok(T::Value), None) => kv::CompareTarget::Value(Vec::new()),
        (Ok(T::Lease), Some(U::Lease(v))) => kv::CompareTarget::Lease(v),
        (Ok(T::Lease), None) => kv::CompareTarget::Lease(0),
        _ => return Err(Status::invalid_argument("etcdserver: compare target and value disagree")),
    };
    Ok(kv::Compare { key: c.key.to_vec(), range_end: c.range_end.to_vec(), result, target })
}

/// etcd Txn → kv Txn (recursively).
pub fn txn_request(t: &pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    let ops = |ops: &[pb::RequestOp]| -> Result<Vec<kv::RequestOp>, Status> {
        ops.iter()
            .map(|op| match &op.request {
                Some(pb::request_op::Request::RequestRange(r)) => {
                    Ok(kv::RequestOp::Range(range_request(r)?))
                }
                Some(pb::request_op::Request::RequestPut(p)) => {
                    Ok(kv::RequestOp::Put(put_request(p)?))
                }
                Some(pb::request_op::Request::RequestDeleteRange(d)) => {
                    Ok(kv::RequestOp::DeleteRange(delete_request(d)))
                }
                Some(pb::request_op::Request::RequestTxn(t)) => {
                    Ok(kv::RequestOp::Txn(txn_request(t)?))
                }
                None => Err(Status::invalid_argument("etcdserver: empty request op in txn")),
            })
            .collect()
    };
    Ok(kv::TxnRequest {
        compare: t.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: ops(&t.success)?,
        failure: ops(&t.failure)?,
    })
}

/// kv record → etcd record.
pub fn key_value(kv: &kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: Bytes::copy_from_slice(&kv.key),
        create_revision: kv.create_revision as i64,
        mod_revision: kv.mod_revision as i64,
        version: kv.version as i64,
        value: Bytes::copy_from_slice(&kv.value),
        lease: kv.lease,
    }
}

impl Api {
    fn range_response(&self, r: &kv::RangeResponse) -> pb::RangeResponse {
        pb::RangeResponse {
            header: self.header(r.revision),
            kvs: r.kvs.iter().map(key_value).collect(),
            more: r.more,
            count: r.count as i64,
        }
    }

    fn put_response(&self, r: &kv::PutResponse) -> pb::PutResponse {
        pb::PutResponse {
            header: self.header(r.revision),
            prev_kv: r.prev_kv.as_ref().map(key_value),
        }
    }

    fn delete_response(&self, r: &kv::DeleteRangeResponse) -> pb::DeleteRangeResponse {
        pb::DeleteRangeResponse {
            header: self.header(r.revision),
            deleted: r.deleted as i64,
            prev_kvs: r.prev_kvs.iter().map(key_value).collect(),
        }
    }

    fn txn_response(&self, r: &kv::TxnResponse) -> pb::TxnResponse {
        pb::TxnResponse {
            header: self.header(r.revision),
            succeeded: r.succeeded,
            responses: txn_responses(&r.responses),
        }
    }
}

/// The responses of a transaction's branch. etcd fills only the revision in their
/// headers (the member and term are in the transaction's own header), so do we.
fn txn_responses(ops: &[kv::ResponseOp]) -> Vec<pb::ResponseOp> {
    use pb::response_op::Response as R;
    let header = |revision: u64| {
        Some(pb::ResponseHeader { revision: revision as i64, ..Default::default() })
    };
    ops.iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                kv::ResponseOp::Put(p) => R::ResponsePut(pb::PutResponse {
                    header: header(p.revision),
                    prev_kv: p.prev_kv.as_ref().map(key_value),
                }),
                kv::ResponseOp::Range(g) => R::ResponseRange(pb::RangeResponse {
                    header: header(g.revision),
                    kvs: g.kvs.iter().map(key_value).collect(),
                    more: g.more,
                    count: g.count as i64,
                }),
                kv::ResponseOp::DeleteRange(d) => R::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: header(d.revision),
                    deleted: d.deleted as i64,
                    prev_kvs: d.prev_kvs.iter().map(key_value).collect(),
                }),
                kv::ResponseOp::Txn(t) => R::ResponseTxn(pb::TxnResponse {
                    header: header(t.revision),
                    succeeded: t.succeeded,
                    responses: txn_responses(&t.responses),
                }),
            }),
        })
        .collect()
}

/// The session a request's metadata names, if any.
fn session<T>(req: &tonic::Request<T>) -> Result<Option<(u64, u64)>, Status> {
    let get = |k: &str| -> Result<Option<u64>, Status> {
        match req.metadata().get(k) {
            None => Ok(None),
            Some(v) => {
                v.to_str().ok().and_then(|s| s.parse().ok()).map(Some).ok_or_else(|| {
                    Status::invalid_argument(format!("metadata {k} must be a number"))
                })
            }
        }
    };
    match (get(CLIENT_ID_HEADER)?, get(SEQ_HEADER)?) {
        (Some(c), Some(s)) => Ok(Some((c, s))),
        (None, None) => Ok(None),
        _ => Err(Status::invalid_argument(format!(
            "metadata {CLIENT_ID_HEADER} and {SEQ_HEADER} go together"
        ))),
    }
}

pub(crate) fn command<T>(req: &tonic::Request<T>, op: Op) -> Result<Command, Status> {
    Ok(match session(req)? {
        Some((client_id, seq)) => Command::with_session(client_id, seq, op),
        None => Command::new(op),
    })
}

fn check_size<T: prost::Message>(req: &T, max: usize) -> Result<(), Status> {
    if req.encoded_len() > max {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    Ok(())
}

/// The kv command of an etcd AlarmRequest.
pub fn alarm_op(r: &pb::AlarmRequest) -> Result<Op, Status> {
    use pb::alarm_request::AlarmAction as A;
    let action = match A::try_from(r.action) {
        Ok(A::Get) => kv::AlarmAction::Get,
        Ok(A::Activate) => kv::AlarmAction::Activate,
        Ok(A::Deactivate) => kv::AlarmAction::Deactivate,
        Err(_) => {
            let what = format!(
                "etcdserver: unknown alarm action {}; use GET, ACTIVATE or DEACTIVATE",
                r.action
            );
            return Err(Status::invalid_argument(what));
        }
    };
    let alarm = match pb::AlarmType::try_from(r.alarm) {
        Ok(pb::AlarmType::None) => kv::AlarmType::None,
        Ok(pb::AlarmType::Nospace) => kv::AlarmType::Nospace,
        Ok(pb::AlarmType::Corrupt) => kv::AlarmType::Corrupt,
        Err(_) => {
            let what =
                format!("etcdserver: unknown alarm type {}; use NONE, NOSPACE or CORRUPT", r.alarm);
            return Err(Status::invalid_argument(what));
        }
    };
    Ok(Op::Alarm { action, member_id: r.member_id, alarm })
}

fn pb_alarm_type(a: kv::AlarmType) -> pb::AlarmType {
    match a {
        kv::AlarmType::None => pb::AlarmType::None,
        kv::AlarmType::Nospace => pb::AlarmType::Nospace,
        kv::AlarmType::Corrupt => pb::AlarmType::Corrupt,
    }
}

fn alarm_member(a: &kv::AlarmMember) -> pb::AlarmMember {
    pb::AlarmMember { member_id: a.member_id, alarm: pb_alarm_type(a.alarm) as i32 }
}

/// An alarm as etcd prints it in Status errors and logs: `memberID:ID alarm:TYPE `.
pub fn alarm_text(a: &kv::AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", a.member_id, pb_alarm_type(a.alarm).as_str_name())
}

fn unexpected(r: kv::Response) -> Status {
    Status::internal(format!("unexpected state machine response {r:?}"))
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Api {
    async fn range(
        &self,
        request: tonic::Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = request.get_ref();
        // The one request-dependent part of the learner rule (see `crate::learner`).
        crate::learner::refuse_range(&self.membership.table, self.member_id, r.serializable)?;
        let req = range_request(r)?;
        let check: Check<'_> = &|auth, stamp| auth.check_read(stamp, &req);
        let read = || self.read(ReadQuery::Range(req.clone()), r.serializable);
        match self.checked_read(&request, check, read).await? {
            kv::Response::Range(resp) => Ok(Response::new(self.range_response(&resp))),
            other => Err(unexpected(other)),
        }
    }

    async fn put(
        &self,
        request: tonic::Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        check_size(request.get_ref(), self.limits.request_bytes)?;
        let put = put_request(request.get_ref())?;
        let check: Check<'_> = &|auth, stamp| auth.check_put(stamp, &put);
        let op = Op::Put(put.clone());
        self.check_quota(&op).await?;
        match self.checked_write(&request, op, check).await? {
            kv::Response::Put(p) => Ok(Response::new(self.put_response(&p))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: tonic::Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        check_size(request.get_ref(), self.limits.request_bytes)?;
        let delete = delete_request(request.get_ref());
        let check: Check<'_> = &|auth, stamp| auth.check_delete(stamp, &delete);
        match self.checked_write(&request, Op::DeleteRange(delete.clone()), check).await? {
            kv::Response::DeleteRange(d) => Ok(Response::new(self.delete_response(&d))),
            other => Err(unexpected(other)),
        }
    }

    async fn txn(
        &self,
        request: tonic::Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        check_size(request.get_ref(), self.limits.request_bytes)?;
        let txn = txn_request(request.get_ref())?;
        // Refused here, a bad txn never reaches the log (apply checks again). Every
        // member runs with the default kv limits (`NodeConfig::new` in lib.rs), whose
        // operation count `--max-txn-ops` may only lower.
        let limits = kv::Config { txn_ops_max: self.limits.txn_ops, ..Default::default() };
        limits.check_txn(&txn).map_err(|e| kv_error(&e))?;
        let check: Check<'_> = &|auth, stamp| auth.check_txn(stamp, &txn);
        let op = Op::Txn(txn.clone());
        self.check_quota(&op).await?;
        match self.checked_write(&request, op, check).await? {
            kv::Response::Txn(t) => Ok(Response::new(self.txn_response(&t))),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: tonic::Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = non_negative("revision", request.get_ref().revision)?;
        let no_check: Check<'_> = &|_, _| Ok(());
        match self.checked_write(&request, Op::Compact { revision }, no_check).await? {
            kv::Response::Compact(c) => {
                Ok(Response::new(pb::CompactionResponse { header: self.header(c.revision) }))
            }
            other => Err(unexpected(other)),
        }
    }
}

impl Api {
    /// The member's current and compact revisions and its
    /// [`hash_kv`](crate::hash::hash_kv) at `at` (0: current), computed off the node
    /// thread.
    async fn hash_at(&self, at: u64) -> Result<(u64, u64, u32), Status> {
        let state =
            self.node.state().await.ok_or_else(|| Status::unavailable("member stopping"))?;
        let (revision, compact_revision) = (state.revision(), state.compact_revision());
        let hash = tokio::task::spawn_blocking(move || crate::hash::hash_kv(&state, at))
            .await
            .map_err(|e| Status::internal(format!("hashing failed: {e}")))?
            .map_err(|e| kv_error(&e))?;
        Ok((revision, compact_revision, hash))
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Api {
    /// etcd's Alarm, through the log as etcd's: GET lists (every alarm for type NONE),
    /// ACTIVATE raises an alarm for the member named, DEACTIVATE clears it. The answer has
    /// no header, as etcd 3.4's.
    async fn alarm(
        &self,
        request: tonic::Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let op = alarm_op(request.get_ref())?;
        match self.write(command(&request, op)?).await? {
            kv::Response::Alarm(a) => Ok(Response::new(pb::AlarmResponse {
                header: None,
                alarms: a.alarms.iter().map(alarm_member).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn status(
        &self,
        _request: tonic::Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.node.status().await.ok_or_else(|| Status::unavailable("member stopping"))?;
        let mut errors = Vec::new();
        if s.leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        // As etcd's: each raised alarm, in the protobuf text form of its AlarmMember.
        errors.extend(s.alarms.iter().map(alarm_text));
        Ok(Response::new(pb::StatusResponse {
            header: self.header(s.revision),
            version: VERSION.to_string(),
            db_size: s.db_size_bytes as i64,
            leader: s.leader.unwrap_or(0),
            raft_index: s.commit_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors,
            db_size_in_use: s.db_size_bytes as i64,
            // From the member table the learner gate reads (`crate::learner`), as
            // etcd's: a member says it is a learner exactly while it refuses as one.
            is_learner: self.membership.table.is_learner(self.member_id),
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        request: tonic::Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.require_admin(&request).await?;
        // etcd's answer has no header (v3rpc returns an empty DefragmentResponse), and
        // client libraries that look for one must see the same here.
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    async fn hash(
        &self,
        request: tonic::Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.require_admin(&request).await?;
        let (revision, _, hash) = self.hash_at(0).await?;
        Ok(Response::new(pb::HashResponse { header: self.header(revision), hash }))
    }

    async fn hash_kv(
        &self,
        request: tonic::Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.require_admin(&request).await?;
        let at = non_negative("revision", request.get_ref().revision)?;
        let (revision, compact_revision, hash) = self.hash_at(at).await?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.header(revision),
            hash,
            compact_revision: compact_revision as i64,
            hash_revision: if at == 0 { revision as i64 } else { at as i64 },
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    /// The member's applied state, streamed in etcd's framing (see [`crate::backup`]):
    /// the view is taken on the node thread in O(1), serialised on a blocking thread,
    /// and sent with backpressure (a slow client holds a few chunks, not the snapshot).
    async fn snapshot(
        &self,
        request: tonic::Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.require_admin(&request).await?;
        let state =
            self.node.state().await.ok_or_else(|| Status::unavailable("member stopping"))?;
        // etcd sends no header on these messages; ours carry the snapshot's revision.
        let header = self.header(state.revision());
        let view = state.snapshot_view();
        drop(state);
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_CHUNKS_QUEUED);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut bytes = 0u64;
            let result = crate::backup::stream_backup(&view, &mut |blob, remaining_bytes| {
                bytes += blob.len() as u64;
                let chunk =
                    pb::SnapshotResponse { header, remaining_bytes, blob, version: String::new() };
                tx.blocking_send(Ok(chunk)).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
                })
            });
            match result {
                Ok(()) => tracing::info!(
                    revision = view.revision(),
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot sent to a client"
                ),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    tracing::info!("snapshot stream abandoned by the client after {bytes} bytes");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot stream failed");
                    let _ = tx.blocking_send(Err(Status::internal(format!(
                        "streaming the snapshot failed: {e}"
                    ))));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    /// etcd's MoveLeader: only the leader accepts it ("etcdserver: not leader"); the
    /// target must be a voting member ("etcdserver: bad leader transferee"); answered
    /// once the target leads, or "leader transfer took too long" when the core gave up
    /// after an election timeout. Needs the root role when auth is on, as etcd's.
    async fn move_leader(
        &self,
        request: tonic::Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.require_admin(&request).await?;
        let s = self.node.status().await.ok_or_else(|| Status::unavailable("member stopping"))?;
        if !s.is_leader {
            return Err(transfer_error(&TransferFailure::NotLeader { leader: s.leader }));
        }
        let target = request.get_ref().target_id;
        // etcd: a member, and not a learner.
        let voter = self.membership.table.get(target).is_some_and(|m| !m.is_learner);
        if !voter {
            return Err(transfer_error(&TransferFailure::BadTransferee(target)));
        }
        self.node.transfer_leader(Some(target)).await.map_err(|e| transfer_error(&e))?;
        let revision = self.node.status().await.map_or(s.revision, |s| s.revision);
        Ok(Response::new(pb::MoveLeaderResponse { header: self.header(revision) }))
    }

    async fn downgrade(
        &self,
        _request: tonic::Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "etcdserver: downgrade is not supported by raftkv (Downgrade is not implemented)",
        ))
    }
}

#[tonic::async_trait]
impl proto::session::session_server::Session for Api {
    async fn register(
        &self,
        _request: tonic::Request<proto::session::RegisterRequest>,
    ) -> Result<Response<proto::session::RegisterResponse>, Status> {
        match self.write(Command::new(Op::RegisterSession)).await? {
            kv::Response::SessionRegistered { client_id } => {
                Ok(Response::new(proto::session::RegisterResponse { client_id }))
            }
            other => Err(unexpected(other)),
        }
    }
}
