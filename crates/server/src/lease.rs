//! etcd's `Lease` service.
//!
//! Grants and revokes are commands through the Raft log like any write (a follower
//! forwards them to the leader). Deadlines live only on the leader, in the node's
//! [`LeaseClock`](node::LeaseClock), which the node thread drives with real elapsed
//! time; the leader revokes an expired lease by proposing the revoke through the log,
//! so every member deletes the same keys at the same revision. Keep-alives and
//! time-to-live queries therefore must reach the leader: they travel as commands
//! ([`kv::Op::LeaseKeepAlive`], [`kv::Op::LeaseTimeToLive`]) over the same path as a
//! write, and the leader's node answers them from its clock without the log.

use crate::etcd::{into_result, request_error, Api};
use kv::{Command, KvError, Op};
use proto::etcdserverpb as pb;
use tokio::sync::mpsc;
use tonic::{Response, Status, Streaming};

/// Keep-alive answers queued per stream before the stream task waits for the client.
const KEEP_ALIVE_QUEUE: usize = 16;

impl Api {
    /// Runs a lease command on the leader (forwarding it if needed).
    async fn lease_command(&self, op: Op) -> Result<kv::Response, Status> {
        into_result(self.write_reply(Command::new(op)).await)
    }
}

fn unexpected(r: kv::Response) -> Status {
    Status::internal(format!("unexpected state machine response {r:?}"))
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Api {
    async fn lease_grant(
        &self,
        request: tonic::Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = request.into_inner();
        self.check_quota(&Op::LeaseGrant { id: r.id, ttl_secs: r.ttl }).await?;
        if r.ttl > kv::LEASE_TTL_MAX_SECS {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        // etcd: a TTL below the minimum (about 1.5 election timeouts) is raised to it,
        // so a lease cannot expire during a leader election.
        let ttl_secs = r.ttl.max(self.lease_ttl_min_secs);
        match self.lease_command(Op::LeaseGrant { id: r.id, ttl_secs }).await? {
            kv::Response::LeaseGranted(g) => Ok(Response::new(pb::LeaseGrantResponse {
                header: self.header(g.revision),
                id: g.id,
                ttl: g.ttl_secs,
                error: String::new(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: tonic::Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = request.get_ref().id;
        // Apply checks write permission on every key attached to the lease (etcd's
        // `checkLeasePuts`); the keys are only known there.
        let no_check: crate::auth::Check<'_> = &|_, _| Ok(());
        match self.checked_write(&request, Op::LeaseRevoke { id }, no_check).await? {
            kv::Response::LeaseRevoked(r) => {
                Ok(Response::new(pb::LeaseRevokeResponse { header: self.header(r.revision) }))
            }
            other => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: tonic::Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let answer = api.keep_alive(req.id).await;
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: tonic::Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let (stamp, state) = self.caller_of(&request).await?;
        if state.enabled && stamp.user.is_empty() {
            return Err(crate::auth::auth_status(kv::AuthError::UserEmpty));
        }
        let r = request.into_inner();
        // With auth on, the keys are needed for the check even if not asked for.
        let keys = r.keys || state.enabled;
        let reply = self.write_reply(Command::new(Op::LeaseTimeToLive { id: r.id, keys }));
        match reply.await {
            Ok(kv::Response::LeaseTtl(t)) => {
                self.check_lease_keys(&stamp, &state, &t.keys).await?;
                let keys = if r.keys { t.keys } else { Vec::new() };
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: self.header(t.revision),
                    id: t.id,
                    ttl: t.ttl_secs,
                    granted_ttl: t.granted_ttl_secs,
                    keys: keys.into_iter().map(Into::into).collect(),
                }))
            }
            // etcd answers an unknown (or expired) lease with TTL -1, not an error.
            Ok(kv::Response::Error(KvError::LeaseNotFound { .. })) => {
                let revision = self.node.status().await.map_or(0, |s| s.revision);
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: self.header(revision),
                    id: r.id,
                    ttl: -1,
                    ..Default::default()
                }))
            }
            other => Err(into_result(other).map_or_else(|e| e, unexpected)),
        }
    }

    async fn lease_leases(
        &self,
        _request: tonic::Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (revision, leases) =
            self.node.leases().await.ok_or_else(|| Status::unavailable("member stopping"))?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.header(revision),
            leases: leases.into_iter().map(|(id, _)| pb::LeaseStatus { id }).collect(),
        }))
    }
}

impl Api {
    /// etcd's `checkLeaseTimeToLive` (etcd 3.4.26 and later; the fix that stopped
    /// TimeToLive from showing key names to users who may not read them): while auth
    /// is on, the caller needs read permission on every key attached to the lease,
    /// and the auth state must not have changed since the check began.
    async fn check_lease_keys(
        &self,
        stamp: &kv::AuthStamp,
        state: &kv::AuthState,
        keys: &[Vec<u8>],
    ) -> Result<(), Status> {
        use crate::auth::auth_status;
        if !state.enabled {
            return Ok(());
        }
        for key in keys {
            state.check_range(stamp, key, &[], kv::PermissionType::Read).map_err(auth_status)?;
        }
        if self.auth_state().await?.revision != state.revision {
            return Err(auth_status(kv::AuthError::OldRevision));
        }
        Ok(())
    }

    /// One keep-alive: the granted TTL, or TTL 0 for a lease that is gone (etcd's
    /// answer, not an error). Other failures end the stream, as in etcd; clients
    /// reopen it.
    async fn keep_alive(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        match self.write_reply(Command::new(Op::LeaseKeepAlive { id })).await {
            Ok(kv::Response::LeaseTtl(t)) => Ok(pb::LeaseKeepAliveResponse {
                header: self.header(t.revision),
                id,
                ttl: t.granted_ttl_secs,
            }),
            Ok(kv::Response::Error(KvError::LeaseNotFound { .. })) => {
                let revision = *self.node.revision().borrow();
                Ok(pb::LeaseKeepAliveResponse { header: self.header(revision), id, ttl: 0 })
            }
            Ok(other) => Err(into_result(Ok(other)).map_or_else(|e| e, unexpected)),
            Err(e) => Err(request_error(&e)),
        }
    }
}
