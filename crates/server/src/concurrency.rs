//! etcd's lock and election services, `v3lockpb.Lock` and `v3electionpb.Election`,
//! built on raftkv's own KV, Lease and Watch semantics exactly as etcd builds them on
//! its client library (`clientv3/concurrency`), so a client sees the same keys, the
//! same revisions and the same order of ownership.
//!
//! The algorithm (etcd's): a contender owns the key `<name>/<lease id in hex>`,
//! written in a transaction only if absent (`create_revision == 0`) and attached to its
//! lease. Contenders are ordered by the create revision of their keys; the one with
//! the smallest holds the lock (or leads the election). A contender that is not first
//! waits, newest predecessor by newest predecessor, for the deletion of every key
//! created before its own; a deletion is an unlock, a resignation, or the end of the
//! predecessor's lease. Waiting reads the member's MVCC history (the code path of
//! [`crate::watch`]) from the revision it last checked, so no deletion is missed.
//!
//! As in etcd, a request with lease 0 runs on a fresh lease of [`SESSION_TTL_SECS`]
//! that nobody keeps alive, and a contender whose request is cancelled while it waits
//! gives its key up (etcd's `Unlock` / `Resign` on a cancelled context).

use crate::etcd::{key_value, Api};
use kv::{Command, CompareResult, CompareTarget, Op, RequestOp, SortOrder, SortTarget};
use node::ReadQuery;
use proto::{v3electionpb as epb, v3lockpb as lpb};
use tokio::sync::mpsc;
use tonic::{Response, Status};

/// TTL of the lease granted for a request that names none (etcd's session default).
pub const SESSION_TTL_SECS: i64 = 60;
/// Leader changes queued per `Observe` stream before the task waits for the client.
const OBSERVE_QUEUE: usize = 16;

/// etcd's messages for the election errors (`concurrency.ErrElection*`, and the
/// election server's check for a missing leader key).
const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

/// `<name>/`: every contender's key starts with it.
fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// A contender's key: the prefix and the lease id in lower-case hex, as etcd's.
fn contender_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix(name);
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

/// The oldest (`Ascend`) or newest (`Descend`) key under `pfx` by create revision,
/// optionally only among keys created at or below `max_create_revision`.
fn by_create(pfx: &[u8], order: SortOrder, max_create_revision: u64) -> kv::RangeRequest {
    kv::RangeRequest {
        key: pfx.to_vec(),
        range_end: kv::prefix_end(pfx),
        limit: 1,
        sort_order: order,
        sort_target: SortTarget::Create,
        max_create_revision,
        ..Default::default()
    }
}

fn get(key: &[u8]) -> kv::RangeRequest {
    kv::RangeRequest { key: key.to_vec(), ..Default::default() }
}

fn create_revision_is(key: &[u8], revision: u64) -> kv::Compare {
    kv::Compare {
        key: key.to_vec(),
        range_end: Vec::new(),
        result: CompareResult::Equal,
        target: CompareTarget::CreateRevision(revision),
    }
}

fn put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp::Put(kv::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    })
}

fn delete(key: &[u8]) -> RequestOp {
    RequestOp::DeleteRange(kv::DeleteRangeRequest {
        key: key.to_vec(),
        range_end: Vec::new(),
        prev_kv: false,
    })
}

/// The key-values of the `i`th response of a transaction, if it is a range.
fn range_kvs(t: &kv::TxnResponse, i: usize) -> &[kv::KeyValue] {
    match t.responses.get(i) {
        Some(kv::ResponseOp::Range(r)) => &r.kvs,
        _ => &[],
    }
}

/// etcd's lock and election servers return their client library's errors as they are,
/// which gRPC sends as `Unknown` with the message: so do we.
fn as_etcd(e: Status) -> Status {
    if e.code() == tonic::Code::Unknown {
        return e;
    }
    Status::unknown(e.message())
}

fn unexpected(r: kv::Response) -> Status {
    Status::internal(format!("unexpected state machine response {r:?}"))
}

/// Gives a contender's key up if the request is dropped (the client went away or
/// cancelled) while it still holds or waits with the key: a delete if the key still
/// has `create_revision`, run on its own task because a drop cannot wait.
struct GiveUpOnDrop {
    api: Api,
    key: Vec<u8>,
    create_revision: u64,
    armed: bool,
}

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        // Outside a runtime (the server is shutting down) the lease ends the key instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.armed {
            let (api, key, rev) = (self.api.clone(), self.key.clone(), self.create_revision);
            runtime.spawn(async move {
                let _ = api.resign_key(&key, rev).await;
            });
        }
    }
}

impl Api {
    async fn txn_kv(&self, t: kv::TxnRequest) -> Result<kv::TxnResponse, Status> {
        match self.write(Command::new(Op::Txn(t))).await? {
            kv::Response::Txn(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    async fn range_kv(&self, r: kv::RangeRequest) -> Result<kv::RangeResponse, Status> {
        match self.read(ReadQuery::Range(r), false).await? {
            kv::Response::Range(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The request's lease, or a fresh one of [`SESSION_TTL_SECS`] for lease 0.
    async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = Op::LeaseGrant { id: 0, ttl_secs: SESSION_TTL_SECS };
        match self.write(Command::new(grant)).await? {
            kv::Response::LeaseGranted(g) => Ok(g.id),
            other => Err(unexpected(other)),
        }
    }

    /// The next events of `key` (or the range to `range_end`) from revision `*from`
    /// on, waiting until there are some; advances `*from` past them. `Ok(None)`: the
    /// history from `*from` was compacted.
    async fn next_events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: &mut u64,
    ) -> Result<Option<(u64, Vec<kv::Event>)>, Status> {
        let mut applied = self.node.revision();
        loop {
            // Mark the revision seen before reading, so a change after the read wakes us.
            applied.borrow_and_update();
            let batch = self.node.events(key.to_vec(), range_end.to_vec(), *from, false).await;
            let batch = match batch {
                None => return Err(Status::unavailable("member stopping")),
                Some(Err(kv::KvError::Compacted { .. })) => return Ok(None),
                Some(Err(e)) => return Err(crate::etcd::kv_error(&e)),
                Some(Ok(b)) => b,
            };
            *from = batch.next_revision;
            if !batch.events.is_empty() {
                return Ok(Some((batch.revision, batch.events)));
            }
            if batch.next_revision > batch.revision && applied.changed().await.is_err() {
                return Err(Status::unavailable("member stopping"));
            }
        }
    }

    /// Waits until `key` is deleted at or after `revision` (etcd's `waitDelete`). A
    /// compacted history returns too: the caller checks the key again.
    async fn wait_delete(&self, key: &[u8], revision: u64) -> Result<(), Status> {
        let mut from = revision;
        loop {
            match self.next_events(key, &[], &mut from).await? {
                None => return Ok(()),
                Some((_, events)) => {
                    if events.iter().any(|e| e.kind == kv::EventKind::Delete) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Waits until no key under `pfx` has a create revision at or below
    /// `max_create_revision` (etcd's `waitDeletes`); answers with the last read's
    /// revision.
    async fn wait_deletes(&self, pfx: &[u8], max_create_revision: u64) -> Result<u64, Status> {
        loop {
            let r = self.range_kv(by_create(pfx, SortOrder::Descend, max_create_revision)).await?;
            match r.kvs.first() {
                None => return Ok(r.revision),
                Some(newest) => self.wait_delete(&newest.key, r.revision).await?,
            }
        }
    }

    /// Deletes `key` if it still has `create_revision` (etcd's `Election.Resign`);
    /// answers with the revision after.
    async fn resign_key(&self, key: &[u8], create_revision: u64) -> Result<u64, Status> {
        let t = kv::TxnRequest {
            compare: vec![create_revision_is(key, create_revision)],
            success: vec![delete(key)],
            failure: Vec::new(),
        };
        Ok(self.txn_kv(t).await?.revision)
    }

    /// Enters the queue of `name` with `key` (attached to `lease`, holding `value` if
    /// new) and waits for its turn: etcd's `Mutex.Lock` and `Election.Campaign`.
    async fn acquire(&self, name: &[u8], lease: i64, value: &[u8]) -> Result<Acquired, Status> {
        let pfx = prefix(name);
        let key = contender_key(name, lease);
        let first = RequestOp::Range(by_create(&pfx, SortOrder::Ascend, 0));
        let enter = kv::TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![put(&key, value, lease), first.clone()],
            failure: vec![RequestOp::Range(get(&key)), first],
        };
        let t = self.txn_kv(enter).await?;
        let create_revision = if t.succeeded {
            t.revision
        } else {
            // The lease already queues here (a retry, or a second request on it).
            range_kvs(&t, 0).first().map_or(t.revision, |kv| kv.create_revision)
        };
        let mut guard = GiveUpOnDrop { api: self.clone(), key, create_revision, armed: true };
        let holder = range_kvs(&t, 1).first().map(|kv| kv.create_revision);
        let mut last_read_revision = t.revision;
        if holder.is_some_and(|h| h != create_revision) {
            last_read_revision = self.wait_deletes(&pfx, create_revision - 1).await?;
        }
        guard.armed = false;
        let key = std::mem::take(&mut guard.key);
        Ok(Acquired { entered: t, key, create_revision, last_read_revision })
    }
}

/// A contender's turn has come.
struct Acquired {
    /// The transaction that entered the queue (or found the key already there).
    entered: kv::TxnResponse,
    /// The contender's key.
    key: Vec<u8>,
    /// Its create revision: its place in the queue.
    create_revision: u64,
    /// The revision of the last read: the entering transaction's if the turn came at
    /// once, else that of the read that found no predecessor left.
    last_read_revision: u64,
}

#[tonic::async_trait]
impl lpb::lock_server::Lock for Api {
    async fn lock(
        &self,
        request: tonic::Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let r = request.into_inner();
        let lease = self.session_lease(r.lease).await.map_err(as_etcd)?;
        let a = self.acquire(&r.name, lease, b"").await.map_err(as_etcd)?;
        Ok(Response::new(lpb::LockResponse {
            header: self.header(a.last_read_revision),
            key: a.key.into(),
        }))
    }

    async fn unlock(
        &self,
        request: tonic::Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let key = request.into_inner().key;
        let d = kv::DeleteRangeRequest { key: key.to_vec(), range_end: Vec::new(), prev_kv: false };
        match self.write(Command::new(Op::DeleteRange(d))).await.map_err(as_etcd)? {
            kv::Response::DeleteRange(d) => {
                Ok(Response::new(lpb::UnlockResponse { header: self.header(d.revision) }))
            }
            other => Err(unexpected(other)),
        }
    }
}

#[tonic::async_trait]
impl epb::election_server::Election for Api {
    async fn campaign(
        &self,
        request: tonic::Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let r = request.into_inner();
        let lease = self.session_lease(r.lease).await.map_err(as_etcd)?;
        let Acquired { entered: t, key, create_revision: rev, .. } =
            self.acquire(&r.name, lease, &r.value).await.map_err(as_etcd)?;
        let mut header = self.header(t.revision);
        if !t.succeeded && range_kvs(&t, 0).first().is_some_and(|kv| kv.value != r.value) {
            // Re-campaigning with a new value proclaims it (etcd's Campaign).
            match self.proclaim_value(&key, rev, lease, &r.value).await {
                Ok(revision) => header = self.header(revision),
                Err(e) => {
                    let _ = self.resign_key(&key, rev).await;
                    return Err(as_etcd(e));
                }
            }
        }
        let leader = epb::LeaderKey { name: r.name, key: key.into(), rev: rev as i64, lease };
        Ok(Response::new(epb::CampaignResponse { header, leader: Some(leader) }))
    }

    async fn proclaim(
        &self,
        request: tonic::Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let r = request.into_inner();
        let l = r.leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let revision =
            self.proclaim_value(&l.key, l.rev as u64, l.lease, &r.value).await.map_err(as_etcd)?;
        Ok(Response::new(epb::ProclaimResponse { header: self.header(revision) }))
    }

    async fn leader(
        &self,
        request: tonic::Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let pfx = prefix(&request.get_ref().name);
        let r = self.range_kv(by_create(&pfx, SortOrder::Ascend, 0)).await.map_err(as_etcd)?;
        let kv = r.kvs.first().ok_or_else(|| Status::unknown(NO_LEADER))?;
        Ok(Response::new(epb::LeaderResponse {
            header: self.header(r.revision),
            kv: Some(key_value(kv)),
        }))
    }

    type ObserveStream =
        tokio_stream::wrappers::ReceiverStream<Result<epb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: tonic::Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let pfx = prefix(&request.get_ref().name);
        let (out, rx) = mpsc::channel(OBSERVE_QUEUE);
        let api = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = out.closed() => {}
                r = api.observe_leaders(&pfx, &out) => {
                    if let Err(e) = r {
                        let _ = out.send(Err(as_etcd(e))).await;
                    }
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        request: tonic::Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let l = request.into_inner().leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let revision = self.resign_key(&l.key, l.rev as u64).await.map_err(as_etcd)?;
        Ok(Response::new(epb::ResignResponse { header: self.header(revision) }))
    }
}

type LeaderSender = mpsc::Sender<Result<epb::LeaderResponse, Status>>;

impl Api {
    /// Sets the leader's value if `key` still leads with `create_revision`.
    async fn proclaim_value(
        &self,
        key: &[u8],
        create_revision: u64,
        lease: i64,
        value: &[u8],
    ) -> Result<u64, Status> {
        let t = kv::TxnRequest {
            compare: vec![create_revision_is(key, create_revision)],
            success: vec![put(key, value, lease)],
            failure: Vec::new(),
        };
        let t = self.txn_kv(t).await?;
        if !t.succeeded {
            return Err(Status::unknown(NOT_LEADER));
        }
        Ok(t.revision)
    }

    /// etcd's `Election.observe`: the current leader, then every new value it
    /// proclaims, then the next leader once it is gone, and so on. Returns when the
    /// history it needs was compacted (the stream ends, as etcd's does).
    async fn observe_leaders(&self, pfx: &[u8], out: &LeaderSender) -> Result<(), Status> {
        let send = |revision: u64, kv: &kv::KeyValue| {
            let r = epb::LeaderResponse { header: self.header(revision), kv: Some(key_value(kv)) };
            out.send(Ok(r))
        };
        loop {
            let r = self.range_kv(by_create(pfx, SortOrder::Ascend, 0)).await?;
            let (revision, leader) = match r.kvs.into_iter().next() {
                Some(kv) => (r.revision, kv),
                None => {
                    // No leader: the first put under the prefix makes one.
                    let mut from = r.revision;
                    let end = kv::prefix_end(pfx);
                    loop {
                        let Some((_, events)) = self.next_events(pfx, &end, &mut from).await?
                        else {
                            return Ok(());
                        };
                        let put = events.into_iter().find(|e| e.kind == kv::EventKind::Put);
                        if let Some(e) = put {
                            break (e.kv.mod_revision, e.kv);
                        }
                    }
                }
            };
            if send(revision, &leader).await.is_err() {
                return Ok(());
            }
            let mut from = revision + 1;
            'leading: loop {
                let Some((at, events)) = self.next_events(&leader.key, &[], &mut from).await?
                else {
                    return Ok(());
                };
                for e in events {
                    if e.kind == kv::EventKind::Delete {
                        break 'leading;
                    }
                    if send(at, &e.kv).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contender_keys_are_the_name_and_the_lease_in_hex() {
        assert_eq!(contender_key(b"job", 0x694d_7b8a), b"job/694d7b8a");
        assert_eq!(prefix(b"a"), b"a/");
    }
}
