//! etcd's Cluster service (MemberAdd, MemberRemove, MemberUpdate, MemberPromote,
//! MemberList) over the node's membership changes ([`node::Node::change_members`]).
//!
//! A change runs on the leader: the leader checks it (the node: unknown member, peer URL
//! in use, learner rules, etcd's strict reconfiguration; this module: etcd's health
//! check, below), proposes it, and answers once it is applied, with every member. A
//! follower hands the change to the leader over the peer transport (`ChangeMembers`),
//! as it does writes, and relays the answer; so does a member publishing its own name
//! and client URLs when it starts (etcd's "publish"), which is how `MemberList` learns
//! them.
//!
//! etcd's health check ("etcdserver: unhealthy cluster"): adding a member needs the
//! checking member to have been connected to every voter for [`HEALTH_INTERVAL`];
//! removing a voter that is up needs enough voters connected that long to keep a quorum
//! without it. etcd runs it on whichever member the client reached; here the leader
//! runs it, since the leader's connections are the ones a new configuration needs.

use crate::etcd::Api;
use crate::peer::{Transport, PEER_MESSAGE_BYTES_MAX};
use crate::peer_guard::MemberTable;
use crate::runtime::NodeHandle;
use node::{Member, MemberChange, MemberChanged, MemberFailure};
use proto::etcdserverpb as pb;
use proto::peer::member_change_request::Change as WireChange;
use proto::peer::peer_client::PeerClient;
use proto::peer::{MemberChangeRequest, MemberChangeResponse, PeerMember};
use raft::NodeId;
use std::time::{Duration, Instant};
use tonic::{Code, Response, Status};

/// How long the leader must have been connected to a voter for etcd's health check
/// (etcd's `HealthInterval`).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// etcd's message when the health check fails (gRPC `Unavailable`).
pub const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
/// etcd's message for peer URLs that are not URLs (gRPC `InvalidArgument`).
pub const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
/// How often a change without a leader, or whose leader just changed, asks again.
const NO_LEADER_RETRY: Duration = Duration::from_millis(50);
/// Most peer URLs one member may have, and the longest one.
const PEER_URLS_MAX: usize = 16;
const PEER_URL_BYTES_MAX: usize = 512;

/// A member's record on the wire (and in this crate's tables).
pub fn wire_member(m: &Member) -> PeerMember {
    PeerMember {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// A member as etcd's Cluster service shows it.
pub fn etcd_member(m: &PeerMember) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// The peers to dial for `members`: each member's first peer URL.
pub fn peers(members: &[PeerMember]) -> Vec<(NodeId, String)> {
    let first = |m: &PeerMember| m.peer_urls.first().map(|u| (m.id, u.clone()));
    members.iter().filter_map(first).collect()
}

/// Keeps the member table and the transport's peers in step with the applied members
/// the node publishes, and tells the transport when this member's removal is applied
/// ([`Transport::removed`]).
pub fn follow_members(
    mut applied: tokio::sync::watch::Receiver<crate::runtime::Membership>,
    membership: Membership,
) {
    tokio::spawn(async move {
        loop {
            let now = applied.borrow_and_update().clone();
            let members: Vec<PeerMember> = now.members.iter().map(wire_member).collect();
            // Empty only while joining, before the first snapshot: keep the listed ones.
            if !members.is_empty() && membership.table.set(members) {
                membership.transport.set_peers(&peers(&membership.table.members()));
            }
            membership.table.set_removed(now.removed_ids.clone());
            if now.removed {
                membership.transport.set_removed();
                return;
            }
            if applied.changed().await.is_err() {
                return; // the node stopped
            }
        }
    });
}

/// The outcome of a change: the member added (MemberAdd) and every member after it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changed {
    /// The member the change added, if it added one.
    pub member: Option<PeerMember>,
    /// Every member, sorted by id.
    pub members: Vec<PeerMember>,
}

impl From<MemberChanged> for Changed {
    fn from(c: MemberChanged) -> Self {
        let mut members: Vec<PeerMember> = c.members.iter().map(wire_member).collect();
        members.sort_by_key(|m| m.id);
        Changed { member: c.member.as_ref().map(wire_member), members }
    }
}

/// etcd's gRPC status for a refused membership change.
pub fn member_error(e: &MemberFailure) -> Status {
    use MemberFailure as F;
    match e {
        F::NotLeader { leader: None } => Status::unavailable("etcdserver: no leader"),
        F::NotLeader { leader: Some(_) } => Status::unavailable("etcdserver: leader changed"),
        F::NotFound(_) => Status::not_found("etcdserver: member not found"),
        F::PeerUrlExists => Status::failed_precondition("etcdserver: Peer URLs already exists"),
        F::LearnerNotReady | F::TooManyLearners | F::NotEnoughStarted | F::NotLearner => {
            Status::failed_precondition(e.to_string())
        }
        F::InProgress => Status::unavailable(e.to_string()),
        F::Timeout => Status::unavailable("etcdserver: request timed out"),
        F::Invalid(why) => Status::invalid_argument(why.clone()),
    }
}

/// Checks peer URLs as etcd's `types.NewURLs` does (`http://` or `https://`, a host
/// and a port, nothing after), with a bound on their number and length.
pub fn check_peer_urls(urls: &[String]) -> Result<(), Status> {
    let ok = |u: &String| {
        let Some(rest) = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://")) else {
            return false;
        };
        let Some((host, port)) = rest.rsplit_once(':') else { return false };
        u.len() <= PEER_URL_BYTES_MAX
            && !host.is_empty()
            && !host.contains('/')
            && port.parse::<u16>().is_ok()
    };
    if urls.is_empty() || urls.len() > PEER_URLS_MAX || !urls.iter().all(ok) {
        return Err(Status::invalid_argument(BAD_URLS));
    }
    Ok(())
}

/// Runs membership changes on the leader (see the module docs).
#[derive(Clone)]
pub struct Membership {
    /// The node thread.
    pub node: NodeHandle,
    /// To reach the leader, and to know since when each peer is connected.
    pub transport: Transport,
    /// The applied members.
    pub table: MemberTable,
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: NodeId,
    /// How long a change may take in all, retries included.
    pub request_timeout: Duration,
}

impl Membership {
    /// Runs `change` on the leader: here if this member leads, else handed to it.
    pub async fn change(&self, change: MemberChange) -> Result<Changed, Status> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            let leader = match self.on_leader(change.clone()).await {
                Err(Refused::NotLeader(leader)) => leader,
                Err(Refused::Status(s)) => return Err(s),
                Ok(changed) => return Ok(changed),
            };
            let tried = match leader {
                Some(l) if l != self.member_id => self.forward(l, &change).await,
                _ => Err(Refused::NotLeader(None)),
            };
            match tried {
                Err(Refused::NotLeader(l)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(leader = ?l, "membership change: leader changed; retrying");
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                Err(Refused::NotLeader(l)) => {
                    return Err(member_error(&MemberFailure::NotLeader { leader: l }))
                }
                Err(Refused::Status(s)) => return Err(s),
                Ok(changed) => return Ok(changed),
            }
        }
    }

    /// Runs `change` if this member leads; `NotLeader` (nothing proposed) otherwise.
    pub async fn on_leader(&self, change: MemberChange) -> Result<Changed, Refused> {
        let Some(status) = self.node.status().await else {
            return Err(Refused::Status(Status::unavailable("member stopping")));
        };
        if !status.is_leader {
            return Err(Refused::NotLeader(status.leader));
        }
        self.check_health(&change).map_err(Refused::Status)?;
        match self.node.change_members(change).await {
            Ok(changed) => Ok(changed.into()),
            Err(MemberFailure::NotLeader { leader }) => Err(Refused::NotLeader(leader)),
            Err(e) => Err(Refused::Status(member_error(&e))),
        }
    }

    /// etcd's health check before adding a member or removing a voter.
    fn check_health(&self, change: &MemberChange) -> Result<(), Status> {
        let since = Instant::now().checked_sub(HEALTH_INTERVAL);
        let members = self.table.members();
        let voters: Vec<NodeId> = members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
        let connected = |id: NodeId| {
            id == self.member_id
                || matches!((self.transport.active_since(id), since), (Some(t), Some(s)) if t <= s)
        };
        let healthy = match change {
            MemberChange::Add { .. } => voters.iter().all(|&v| connected(v)),
            MemberChange::Remove(id) => {
                let learner = members.iter().any(|m| m.id == *id && m.is_learner);
                let down = *id != self.member_id && self.transport.active_since(*id).is_none();
                let active = voters.iter().filter(|&&v| connected(v)).count();
                // etcd's rule: the voters connected, less the one removed, still a
                // quorum of the configuration before the change.
                learner || down || active.saturating_sub(1) > voters.len().saturating_sub(1) / 2
            }
            _ => true,
        };
        if healthy {
            Ok(())
        } else {
            Err(Status::unavailable(UNHEALTHY))
        }
    }

    /// Hands `change` to `leader` over the peer transport.
    async fn forward(&self, leader: NodeId, change: &MemberChange) -> Result<Changed, Refused> {
        let Some(channel) = self.transport.channel(leader) else {
            return Err(Refused::NotLeader(None));
        };
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let req =
            MemberChangeRequest { cluster_id: self.cluster_id, change: Some(to_wire(change)) };
        let mut req = tonic::Request::new(req);
        req.set_timeout(self.request_timeout);
        let answer = tokio::time::timeout(self.request_timeout, client.change_members(req)).await;
        // A call that failed may have been applied there: its outcome is unknown.
        let resp = match answer {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(_)) | Err(_) => {
                return Err(Refused::Status(member_error(&MemberFailure::Timeout)))
            }
        };
        from_wire_response(resp)
    }

    /// The leader's side of `ChangeMembers`: runs the change if this member leads.
    pub async fn serve(&self, req: MemberChangeRequest) -> MemberChangeResponse {
        if req.cluster_id != self.cluster_id {
            let s = Status::failed_precondition("membership change from another cluster");
            return status_response(&s);
        }
        let Some(change) = req.change.and_then(from_wire) else {
            return status_response(&Status::invalid_argument("malformed membership change"));
        };
        match self.on_leader(change).await {
            Ok(changed) => MemberChangeResponse {
                member: changed.member,
                members: changed.members,
                ..Default::default()
            },
            Err(Refused::NotLeader(leader)) => MemberChangeResponse {
                not_leader: true,
                leader: leader.unwrap_or(0),
                ..Default::default()
            },
            Err(Refused::Status(s)) => status_response(&s),
        }
    }
}

/// Why a change did not run on this member.
#[derive(Debug)]
pub enum Refused {
    /// It does not lead; the leader it knows. Nothing was proposed.
    NotLeader(Option<NodeId>),
    /// Refused or failed with etcd's status.
    Status(Status),
}

fn status_response(s: &Status) -> MemberChangeResponse {
    MemberChangeResponse {
        code: s.code() as i32,
        message: s.message().to_string(),
        ..Default::default()
    }
}

fn from_wire_response(resp: MemberChangeResponse) -> Result<Changed, Refused> {
    if resp.not_leader {
        return Err(Refused::NotLeader((resp.leader != 0).then_some(resp.leader)));
    }
    if resp.code != 0 {
        return Err(Refused::Status(Status::new(Code::from(resp.code), resp.message)));
    }
    Ok(Changed { member: resp.member, members: resp.members })
}

fn to_wire(change: &MemberChange) -> WireChange {
    use proto::peer::{MemberAdd, MemberPublish, MemberUpdate};
    match change.clone() {
        MemberChange::Add { peer_urls, is_learner } => {
            WireChange::Add(MemberAdd { peer_urls, is_learner })
        }
        MemberChange::Remove(id) => WireChange::Remove(id),
        MemberChange::Update { id, peer_urls } => {
            WireChange::Update(MemberUpdate { id, peer_urls })
        }
        MemberChange::Promote(id) => WireChange::Promote(id),
        MemberChange::Publish { id, name, client_urls } => {
            WireChange::Publish(MemberPublish { id, name, client_urls })
        }
    }
}

fn from_wire(change: WireChange) -> Option<MemberChange> {
    Some(match change {
        WireChange::Add(a) => {
            MemberChange::Add { peer_urls: a.peer_urls, is_learner: a.is_learner }
        }
        WireChange::Remove(id) => MemberChange::Remove(id),
        WireChange::Update(u) => MemberChange::Update { id: u.id, peer_urls: u.peer_urls },
        WireChange::Promote(id) => MemberChange::Promote(id),
        WireChange::Publish(p) => {
            MemberChange::Publish { id: p.id, name: p.name, client_urls: p.client_urls }
        }
    })
}

impl Api {
    /// The members, as every Cluster answer lists them.
    fn etcd_members(members: &[PeerMember]) -> Vec<pb::Member> {
        members.iter().map(etcd_member).collect()
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Api {
    /// etcd's MemberAdd: the new member (id, peer URLs, learner flag; no name yet) and
    /// every member. Needs root when auth is on, as etcd 3.4's.
    async fn member_add(
        &self,
        request: tonic::Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.require_admin(&request).await?;
        let r = request.into_inner();
        check_peer_urls(&r.peer_ur_ls)?;
        let change = MemberChange::Add { peer_urls: r.peer_ur_ls, is_learner: r.is_learner };
        let changed = self.membership.change(change).await?;
        let member = changed.member.as_ref().map(|m| pb::Member {
            name: String::new(),
            client_ur_ls: Vec::new(),
            ..etcd_member(m)
        });
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(0),
            member,
            members: Api::etcd_members(&changed.members),
        }))
    }

    async fn member_remove(
        &self,
        request: tonic::Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.require_admin(&request).await?;
        let id = request.get_ref().id;
        let changed = self.membership.change(MemberChange::Remove(id)).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(0),
            members: Api::etcd_members(&changed.members),
        }))
    }

    async fn member_update(
        &self,
        request: tonic::Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.require_admin(&request).await?;
        let r = request.into_inner();
        check_peer_urls(&r.peer_ur_ls)?;
        let change = MemberChange::Update { id: r.id, peer_urls: r.peer_ur_ls };
        let changed = self.membership.change(change).await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(0),
            members: Api::etcd_members(&changed.members),
        }))
    }

    /// etcd's MemberList: the applied members, sorted by id; a member that has not
    /// published yet has no name and no client URLs (etcdctl shows it "unstarted").
    async fn member_list(
        &self,
        _request: tonic::Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        // etcd's cluster service fills cluster id, member id and raft term, never a
        // revision (membership is not part of the key space).
        let members = Api::etcd_members(&self.membership.table.members());
        Ok(Response::new(pb::MemberListResponse { header: self.header(0), members }))
    }

    async fn member_promote(
        &self,
        request: tonic::Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.require_admin(&request).await?;
        let id = request.get_ref().id;
        let changed = self.membership.change(MemberChange::Promote(id)).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(0),
            members: Api::etcd_members(&changed.members),
        }))
    }
}

/// Publishes this member's name and client URLs (etcd's publish) until the cluster has
/// them: at start, and again whenever the applied record differs (a new leader lost
/// nothing, but a record restored from an old snapshot may lack them). Bounded: one
/// attempt per request timeout at most.
pub async fn publish(membership: Membership, name: String, client_urls: Vec<String>) {
    let me = membership.member_id;
    loop {
        let published = membership
            .table
            .get(me)
            .is_some_and(|m| m.name == name && m.client_urls == client_urls);
        if !published {
            let change = MemberChange::Publish {
                id: me,
                name: name.clone(),
                client_urls: client_urls.clone(),
            };
            match membership.change(change).await {
                Ok(_) => {
                    tracing::info!(name = %name, client_urls = ?client_urls, "published to the cluster")
                }
                Err(e) => tracing::debug!(error = %e.message(), "publishing failed; retrying"),
            }
        }
        tokio::time::sleep(membership.request_timeout.min(Duration::from_secs(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_checked_as_etcd_checks_them() {
        let ok = |u: &[&str]| check_peer_urls(&u.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["http://127.0.0.1:2380"]).is_ok());
        assert!(ok(&["https://10.0.0.1:2380", "http://host.example:1"]).is_ok());
        for bad in [&[][..], &["foo"], &["http://127.0.0.1"], &["unix://x:1/a"], &["http://:1"]] {
            let e = ok(bad).unwrap_err();
            assert_eq!((e.code(), e.message()), (Code::InvalidArgument, BAD_URLS), "{bad:?}");
        }
    }

    #[test]
    fn refusals_carry_etcds_codes_and_texts() {
        let e = member_error(&MemberFailure::NotFound(7));
        assert_eq!((e.code(), e.message()), (Code::NotFound, "etcdserver: member not found"));
        let e = member_error(&MemberFailure::PeerUrlExists);
        assert_eq!(e.message(), "etcdserver: Peer URLs already exists");
        assert_eq!(e.code(), Code::FailedPrecondition);
        let e = member_error(&MemberFailure::TooManyLearners);
        assert_eq!(e.message(), "etcdserver: too many learner members in cluster");
        let e = member_error(&MemberFailure::LearnerNotReady);
        assert_eq!(
            e.message(),
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
    }

    #[test]
    fn changes_cross_the_wire_unchanged() {
        let changes = [
            MemberChange::Add { peer_urls: vec!["http://a:1".into()], is_learner: true },
            MemberChange::Remove(3),
            MemberChange::Update { id: 4, peer_urls: vec!["http://b:2".into()] },
            MemberChange::Promote(5),
            MemberChange::Publish {
                id: 6,
                name: "m6".into(),
                client_urls: vec!["http://c:3".into()],
            },
        ];
        for c in changes {
            assert_eq!(from_wire(to_wire(&c)), Some(c.clone()));
        }
    }
}
