//! What a learner serves on its client port: etcd 3.4's rule. A learner is not in the
//! quorum and may lag the log, so etcd 3.4 answers every request on a learner with
//! `Unavailable "etcdserver: rpc not supported for learner"` except `Status` and
//! serializable `Range`; every stream (Watch, LeaseKeepAlive, Snapshot, Observe) is
//! refused too. Clients (etcd's and ours) take `Unavailable` as "try another member".
//! A promoted member serves everything from the moment its member table says it votes.
//!
//! The rule is checked in two places that share [`LearnerRule`]:
//! - [`LearnerLayer`], a tower layer on the client router, refuses by the request's path
//!   before any service runs. It refuses by default: an RPC added later is refused on a
//!   learner until it is allowed here, as etcd's interceptor does. One layer rather than a
//!   call in each of the fifty-odd handlers, where a forgotten call would serve.
//! - `Range` is the one RPC whose answer depends on the request (its `serializable`
//!   flag), which the layer cannot see without decoding the body itself: the layer lets
//!   it through and the `Range` handler calls [`refuse_range`] on the decoded request.

use crate::peer_guard::MemberTable;
use raft::NodeId;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// etcd 3.4's answer to a request a learner does not serve (`rpctypes`
/// `ErrGPRCNotSupportedForLearner`).
pub const NOT_SUPPORTED: &str = "etcdserver: rpc not supported for learner";

/// `Unavailable` with [`NOT_SUPPORTED`], etcd 3.4's code and text.
pub fn refused() -> tonic::Status {
    tonic::Status::unavailable(NOT_SUPPORTED)
}

/// What a learner does with a request, by its gRPC path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnerRule {
    /// Served (`Maintenance/Status`).
    Serve,
    /// Served if serializable (`KV/Range`); the handler decides ([`refuse_range`]).
    ServeIfSerializable,
    /// Refused with [`refused`].
    Refuse,
}

/// The rule for the request at `path` (`/package.Service/Method`).
pub fn rule(path: &str) -> LearnerRule {
    match path {
        "/etcdserverpb.Maintenance/Status" => LearnerRule::Serve,
        "/etcdserverpb.KV/Range" => LearnerRule::ServeIfSerializable,
        _ => LearnerRule::Refuse,
    }
}

/// For the `Range` handler: refuses a linearizable range while member `me` is a learner.
pub fn refuse_range(
    table: &MemberTable,
    me: NodeId,
    serializable: bool,
) -> Result<(), tonic::Status> {
    if !serializable && table.is_learner(me) {
        return Err(refused());
    }
    Ok(())
}

/// The tower layer that refuses, on a learner, every request [`rule`] refuses.
#[derive(Clone)]
pub struct LearnerLayer {
    table: MemberTable,
    me: NodeId,
}

impl LearnerLayer {
    /// The layer for member `me`, whose learner flag is read from `table` (the applied
    /// member table) on each request.
    pub fn new(table: MemberTable, me: NodeId) -> Self {
        LearnerLayer { table, me }
    }
}

impl<S> tower::Layer<S> for LearnerLayer {
    type Service = LearnerGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LearnerGate { inner, table: self.table.clone(), me: self.me }
    }
}

/// The service [`LearnerLayer`] makes.
#[derive(Clone)]
pub struct LearnerGate<S> {
    inner: S,
    table: MemberTable,
    me: NodeId,
}

/// The gate's answer: boxed, as tonic's own are (one allocation next to a gRPC call's).
type GateFuture<R> = Pin<Box<dyn Future<Output = Result<R, tower::BoxError>> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for LearnerGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = tower::BoxError;
    type Future = GateFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if rule(req.uri().path()) == LearnerRule::Refuse && self.table.is_learner(self.me) {
            return Box::pin(std::future::ready(Ok(refused().into_http())));
        }
        let served = self.inner.call(req);
        Box::pin(async move { served.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::peer::PeerMember;

    #[test]
    fn a_learner_serves_status_and_serializable_ranges_only() {
        assert_eq!(rule("/etcdserverpb.Maintenance/Status"), LearnerRule::Serve);
        assert_eq!(rule("/etcdserverpb.KV/Range"), LearnerRule::ServeIfSerializable);
        for refused in [
            "/etcdserverpb.KV/Put",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.Watch/Watch",
            "/etcdserverpb.Lease/LeaseGrant",
            "/etcdserverpb.Lease/LeaseKeepAlive",
            "/etcdserverpb.Cluster/MemberList",
            "/etcdserverpb.Maintenance/Snapshot",
            "/etcdserverpb.Auth/Authenticate",
            "/raftkv.session.Session/Open",
            "/etcdserverpb.Maintenance/Status/",
        ] {
            assert_eq!(rule(refused), LearnerRule::Refuse, "{refused}");
        }
    }

    #[test]
    fn only_a_learner_refuses_linearizable_ranges() {
        let member = |id, is_learner| PeerMember { id, is_learner, ..Default::default() };
        let table = MemberTable::new(vec![member(1, false), member(2, true)]);
        assert!(refuse_range(&table, 1, false).is_ok());
        assert!(refuse_range(&table, 2, true).is_ok());
        let e = refuse_range(&table, 2, false).unwrap_err();
        assert_eq!((e.code(), e.message()), (tonic::Code::Unavailable, NOT_SUPPORTED));
        // Promoted: served at once.
        table.set(vec![member(1, false), member(2, false)]);
        assert!(refuse_range(&table, 2, false).is_ok());
        // Not (or no longer) a member: etcd checks learners only.
        assert!(refuse_range(&table, 3, false).is_ok());
    }
}
