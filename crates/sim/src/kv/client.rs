//! Simulated clients: one operation at a time through a [`node::Clerk`], recorded in the
//! run's [`lincheck::History`].
//!
//! A client registers a session first (not recorded: it reads and writes no key), then
//! draws operations over the run's keys. It sends each to the clerk's target; on "not
//! leader" with a hint it follows the hint at once, on other refusals it backs off a
//! little and tries the next member, and on silence it resends the *same* request (same
//! session sequence number) to the next member. After the deadline it gives up: a write
//! becomes [`Outcome::Unknown`] (it may still take effect), a read [`Outcome::Fail`] (it
//! had none). A write refused because the session expired is unknown too (an earlier
//! attempt may have executed before the session went); the client registers again.

use super::auth_check;
use super::cluster::{kv_trace, KvCluster};
use super::lease::{HeldLease, LeaseOp};
use crate::checker::Violation;
use kv::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KvError, Op, PutRequest,
    RequestOp, Response, TxnRequest,
};
use lincheck::{KvOp, KvResult, OpId, Outcome};
use node::{Clerk, ReadQuery, Request, RequestError};
use raft::NodeId;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;

/// Relative frequencies of the operations random clients draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpMix {
    /// Linearizable reads of one key.
    pub get: u32,
    /// Puts of a fresh value.
    pub put: u32,
    /// Appends of a fresh suffix.
    pub append: u32,
    /// Deletes of one key.
    pub delete: u32,
    /// Compare-and-sets (a `Txn` on the value, or on absence).
    pub cas: u32,
    /// Compactions of the MVCC history to the last revision the client saw (not
    /// recorded: they change no key).
    pub compact: u32,
    /// Lease operations (grant, put a leased key, revoke; keep-alives come on top, when
    /// due). Not recorded: leased keys are apart from the checked ones.
    pub lease: u32,
}

impl Default for OpMix {
    fn default() -> Self {
        OpMix { get: 30, put: 20, append: 20, delete: 8, cas: 20, compact: 2, lease: 0 }
    }
}

impl OpMix {
    fn total(&self) -> u64 {
        u64::from(
            self.get + self.put + self.append + self.delete + self.cas + self.compact + self.lease,
        )
    }
}

/// What the operation in flight is for.
enum Purpose {
    Register,
    Compact,
    Auth,
    Kv { id: OpId, op: KvOp },
    Lease(LeaseOp),
}

/// What a client draws next.
enum Drawn {
    Kv(KvOp),
    Compact,
    Auth(kv::AuthOp),
    Lease(LeaseOp),
}

struct InFlight {
    purpose: Purpose,
    request: Request,
    attempt: u64,
    /// An attempt is out and its timer runs; false while backing off.
    awaiting: bool,
    invoked_us: u64,
    deadline_us: u64,
}

/// One simulated client.
pub(crate) struct Client {
    pub(crate) clerk: Clerk,
    op_no: u64,
    current: Option<InFlight>,
    pub(crate) timer_token: u64,
    values_made: u64,
    /// The last value this client knows each key had (for compare-and-set).
    seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    last_revision: u64,
    scripted: VecDeque<KvOp>,
    /// Invoke time of the latest operation that completed with a result.
    pub(crate) last_ok_invoke_us: Option<u64>,
    /// Leases it holds.
    pub(crate) leases: Vec<HeldLease>,
}

impl Client {
    pub(crate) fn new(_index: usize, servers: Vec<NodeId>, first: u64) -> Client {
        Client {
            clerk: Clerk::new(servers, first as usize),
            op_no: 0,
            current: None,
            timer_token: 0,
            values_made: 0,
            seen: BTreeMap::new(),
            last_revision: 0,
            scripted: VecDeque::new(),
            last_ok_invoke_us: None,
            leases: Vec::new(),
        }
    }
}

/// Why a reply is not a result for the history.
enum Refusal {
    Expired,
    /// Refused by the permission check at apply.
    Auth(kv::AuthError),
    Unexpected(String),
}

/// The request that performs `op`, with a session sequence number for writes.
fn to_request(clerk: &mut Clerk, op: &KvOp) -> Request {
    let command = |clerk: &mut Clerk, op: Op| -> Request { Request::Write(clerk.new_command(op)) };
    match op.clone() {
        KvOp::Get { key } => Request::Read { query: ReadQuery::Get(key), serializable: false },
        KvOp::Put { key, value } => {
            command(clerk, Op::Put(PutRequest { key, value, ..Default::default() }))
        }
        KvOp::Append { key, value } => command(clerk, Op::Append { key, suffix: value }),
        KvOp::Delete { key } => {
            command(clerk, Op::DeleteRange(DeleteRangeRequest { key, ..Default::default() }))
        }
        KvOp::Cas { key, expected, new } => {
            let target = match expected {
                Some(v) => CompareTarget::Value(v),
                None => CompareTarget::Version(0),
            };
            let compare = Compare {
                key: key.clone(),
                range_end: Vec::new(),
                result: CompareResult::Equal,
                target,
            };
            let put = RequestOp::Put(PutRequest { key, value: new, ..Default::default() });
            let txn = TxnRequest { compare: vec![compare], success: vec![put], failure: vec![] };
            command(clerk, Op::Txn(txn))
        }
    }
}

/// The history's view of a reply to `op`.
fn interpret(op: &KvOp, response: &Response) -> Result<KvResult, Refusal> {
    let result = match (op, response) {
        (_, Response::Error(KvError::SessionExpired { .. })) => return Err(Refusal::Expired),
        (_, Response::Error(KvError::Auth(e))) => return Err(Refusal::Auth(*e)),
        (KvOp::Get { .. }, Response::Get(g)) => {
            KvResult::Value(g.kv.as_ref().map(|kv| kv.value.clone()))
        }
        (KvOp::Put { .. }, Response::Put(_))
        | (KvOp::Append { .. }, Response::Append(_))
        | (KvOp::Delete { .. }, Response::DeleteRange(_)) => KvResult::Done,
        (KvOp::Cas { .. }, Response::Txn(t)) => KvResult::Cas { swapped: t.succeeded },
        _ => return Err(Refusal::Unexpected(format!("{op:?} was answered with {response:?}"))),
    };
    Ok(result)
}

fn describe(op: &KvOp) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match op {
        KvOp::Get { key } => format!("get {}", s(key)),
        KvOp::Put { key, value } => format!("put {} {}", s(key), s(value)),
        KvOp::Append { key, value } => format!("append {} {}", s(key), s(value)),
        KvOp::Delete { key } => format!("delete {}", s(key)),
        KvOp::Cas { key, expected, new } => {
            format!("cas {} {:?} {}", s(key), expected.as_deref().map(s), s(new))
        }
    }
}

impl KvCluster {
    /// Queues `op` for client `client` (for scenarios with `random_ops` off); it starts
    /// once the client is registered and idle.
    pub fn client_invoke(&mut self, client: usize, op: KvOp) {
        self.clients[client].scripted.push_back(op);
        if self.clients[client].current.is_none() {
            self.arm_client_timer(client, 0);
        }
    }

    /// True when the client has nothing in flight and nothing queued.
    pub fn client_idle(&self, client: usize) -> bool {
        let c = &self.clients[client];
        c.current.is_none() && c.scripted.is_empty()
    }

    /// The client's session id, once registered.
    pub fn client_session(&self, client: usize) -> Option<u64> {
        self.clients[client].clerk.session()
    }

    /// True when no client has an operation in flight.
    pub fn clients_idle(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
    }

    /// Lets clients start new operations, or stops them (those in flight finish).
    pub fn set_clients_active(&mut self, active: bool) {
        self.clients_active = active;
        if active {
            for c in 0..self.clients.len() {
                if self.clients[c].current.is_none() {
                    self.arm_client_timer(c, 0);
                }
            }
        }
    }

    /// Clients that have not completed an operation invoked at or after `since_us`.
    pub fn clients_without_progress_since(&self, since_us: u64) -> Vec<usize> {
        let stuck = |c: &Client| c.last_ok_invoke_us.is_none_or(|t| t < since_us);
        self.clients.iter().enumerate().filter(|(_, c)| stuck(c)).map(|(k, _)| k).collect()
    }

    pub(crate) fn on_client_timer(&mut self, c: usize, token: u64) {
        if token != self.clients[c].timer_token {
            return;
        }
        let Some(f) = self.clients[c].current.as_ref() else {
            return self.client_start_next(c);
        };
        if !f.awaiting {
            return self.client_send(c);
        }
        if self.now_us >= f.deadline_us {
            return self.client_give_up(c);
        }
        self.clients[c].clerk.on_no_answer();
        self.client_send(c);
    }

    fn think_time(&mut self) -> u64 {
        self.rng_ops.range(1, 2 * self.cfg.think_us.max(1) + 1)
    }

    /// A random change of the auth state over a few names, so adds, grants, revokes,
    /// deletes and enables meet each other (enable needs user root with role root;
    /// most draws are refused at first, which replicates refusals too).
    fn draw_auth_op(&mut self) -> kv::AuthOp {
        use kv::{AuthOp as A, Permission, PermissionType as T};
        // Half the time while auth is off (as the log has it), the next step towards
        // turning it on, so the users' commands spend part of the run under checks.
        if let Some(step) = auth_check::next_enable_step(self.reference.state().auth()) {
            if self.rng_ops.chance(0.5) {
                return step;
            }
        }
        let keys = self.cfg.keys.max(1) as u64;
        let r = &mut self.rng_ops;
        let user = ["root", "u0", "u1"][r.range(0, 3) as usize].to_string();
        let role = ["root", "r0", "r1"][r.range(0, 3) as usize].to_string();
        let key = format!("k{}", r.range(0, keys)).into_bytes();
        match r.range(0, 11) {
            0 => A::UserAdd { name: user, password_hash: Some(vec![b'h'; r.range(1, 8) as usize]) },
            1 => A::UserDelete { name: user },
            2 => A::RoleAdd { name: role },
            3 => A::RoleDelete { name: role },
            4 | 5 => A::UserGrantRole { user, role },
            6 => A::UserRevokeRole { user, role },
            7 => {
                let perm_type = [T::Read, T::Write, T::ReadWrite][r.range(0, 3) as usize];
                let range_end = if r.chance(0.5) { Vec::new() } else { vec![0] };
                A::RoleGrantPermission {
                    role,
                    permission: Permission { perm_type, key, range_end },
                }
            }
            8 => A::RoleRevokePermission { role, key, range_end: Vec::new() },
            9 => A::Enable,
            _ => A::Disable,
        }
    }

    /// Draws a random operation for client `c` (a due keep-alive first).
    fn draw_op(&mut self, c: usize) -> Drawn {
        if let Some(keep_alive) = self.due_keep_alive(c) {
            return Drawn::Lease(keep_alive);
        }
        if self.cfg.auth_share > 0.0 && self.rng_ops.chance(self.cfg.auth_share) {
            return Drawn::Auth(self.draw_auth_op());
        }
        let mix = &self.cfg.mix;
        let total = mix.total();
        if total == 0 {
            return Drawn::Compact;
        }
        let mut r = self.rng_ops.range(0, total);
        let key = format!("k{}", self.rng_ops.range(0, self.cfg.keys as u64)).into_bytes();
        let client = &mut self.clients[c];
        client.values_made += 1;
        let value = format!("{c}.{}", client.values_made).into_bytes();
        let weights = [mix.get, mix.put, mix.append, mix.delete, mix.cas, mix.compact, mix.lease];
        let mut kind = 0;
        while r >= u64::from(weights[kind]) {
            r -= u64::from(weights[kind]);
            kind += 1;
        }
        Drawn::Kv(match kind {
            0 => KvOp::get(key),
            1 => KvOp::put(key, value),
            2 => KvOp::append(key, [value.as_slice(), b";"].concat()),
            3 => KvOp::delete(key),
            4 => {
                let known = client.seen.get(&key).cloned().flatten();
                let expected = if self.rng_ops.chance(0.75) { known } else { None };
                KvOp::Cas { key, expected, new: value }
            }
            5 => return Drawn::Compact,
            _ => return Drawn::Lease(self.draw_lease_op(c, value)),
        })
    }

    fn client_start_next(&mut self, c: usize) {
        if !self.clients_active {
            return;
        }
        let deadline_us = self.now_us.saturating_add(self.cfg.op_deadline_us);
        let invoked_us = self.now_us;
        let (purpose, request) = if self.clients[c].clerk.session().is_none() {
            (Purpose::Register, Request::Write(self.clients[c].clerk.register_command()))
        } else {
            let op = if self.cfg.random_ops {
                self.draw_op(c)
            } else {
                match self.clients[c].scripted.pop_front() {
                    Some(op) => Drawn::Kv(op),
                    None => return,
                }
            };
            match op {
                Drawn::Lease(op) => {
                    let request = self.lease_request(c, &op);
                    kv_trace!(self, "c{c} invokes {op}");
                    (Purpose::Lease(op), request)
                }
                Drawn::Kv(op) => {
                    let mut request = to_request(&mut self.clients[c].clerk, &op);
                    auth_check::stamp_as(&mut request, auth_check::client_user(&self.cfg, c));
                    if let Request::Read { serializable, .. } = &mut request {
                        *serializable = self.cfg.stale_reads;
                    }
                    let id = self.history.invoke(c as u64 + 1, self.now_us, op.clone());
                    self.stats.ops += 1;
                    kv_trace!(self, "c{c} invokes {}: {}", id, describe(&op));
                    (Purpose::Kv { id, op }, request)
                }
                Drawn::Auth(op) => {
                    kv_trace!(self, "c{c} invokes auth {op:?}");
                    let cmd: Command = self.clients[c].clerk.new_command(Op::Auth(op));
                    (Purpose::Auth, Request::Write(cmd))
                }
                Drawn::Compact => {
                    let revision = self.clients[c].last_revision.max(1);
                    let cmd: Command = self.clients[c].clerk.new_command(Op::Compact { revision });
                    (Purpose::Compact, Request::Write(cmd))
                }
            }
        };
        let client = &mut self.clients[c];
        client.op_no += 1;
        client.current = Some(InFlight {
            purpose,
            request,
            attempt: 0,
            awaiting: false,
            invoked_us,
            deadline_us,
        });
        self.client_send(c);
    }

    fn client_send(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let f = client.current.as_mut().expect("an operation in flight");
        f.attempt += 1;
        f.awaiting = true;
        let (to, key, request) =
            (client.clerk.target(), (client.op_no, f.attempt), f.request.clone());
        if key.1 > 1 {
            self.stats.resends += 1;
        }
        self.send_request(c, to, key, request);
        self.arm_client_timer(c, self.cfg.client_timeout_us);
    }

    pub(crate) fn on_client_reply(
        &mut self,
        c: usize,
        from: NodeId,
        (op_no, attempt, received_us): (u64, u64, u64),
        result: Result<Response, RequestError>,
    ) {
        let cut = !self.client_link_up(c, from);
        let client = &self.clients[c];
        let stale = client.current.is_none() || client.op_no != op_no;
        kv_trace!(
            self,
            "c{c} <- n{from} op{op_no}.{attempt} {}{}",
            match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("{e:?}"),
            },
            if cut {
                " dropped: link cut"
            } else if stale {
                " (stale)"
            } else {
                ""
            }
        );
        if stale || cut {
            return;
        }
        let f = self.clients[c].current.as_ref().expect("in flight");
        let err = match result {
            Ok(response) => return self.client_answered(c, from, response, received_us),
            Err(e) => e,
        };
        // Refusals of an earlier attempt were overtaken by the resend.
        if attempt != f.attempt || !f.awaiting {
            return;
        }
        if let RequestError::TooLarge { .. } = err {
            let details = format!("c{c}'s request was refused as too large: {err}");
            return self.record(Violation::new("Client protocol", details));
        }
        if self.now_us >= f.deadline_us {
            return self.client_give_up(c);
        }
        self.clients[c].clerk.on_error(from, &err);
        match err {
            RequestError::NotLeader { leader: Some(l) } if l != from => self.client_send(c),
            _ => {
                // No leader known, a timeout or a busy leader: pause before the next try.
                self.clients[c].current.as_mut().expect("in flight").awaiting = false;
                let pause = self.rng_ops.range(10_000, 50_001);
                self.arm_client_timer(c, pause);
            }
        }
    }

    fn client_answered(&mut self, c: usize, from: NodeId, response: Response, received_us: u64) {
        let client = &mut self.clients[c];
        client.clerk.on_success(from);
        if let Response::Error(KvError::Auth(kv::AuthError::OldRevision)) = response {
            // Checked under an auth state that changed before apply: the server checks
            // and proposes it again, stamped anew; so does the client, until its deadline.
            kv_trace!(self, "c{c}'s command was stamped at an old auth revision: sent again");
            let deadline_us = self.clients[c].current.as_ref().expect("in flight").deadline_us;
            if self.now_us >= deadline_us {
                return self.client_give_up(c);
            }
            return self.client_send(c);
        }
        let client = &mut self.clients[c];
        let f = client.current.take().expect("in flight");
        match f.purpose {
            Purpose::Lease(op) => {
                if let Err(what) = self.lease_answered(c, op, response, (f.invoked_us, received_us))
                {
                    return self.bad_reply(c, what);
                }
            }
            Purpose::Register => match response {
                Response::SessionRegistered { client_id } => {
                    client.clerk.on_registered(client_id);
                    self.stats.registrations += 1;
                    kv_trace!(self, "c{c} registered session {client_id}");
                }
                other => return self.bad_reply(c, format!("registration answered with {other:?}")),
            },
            Purpose::Compact => match response {
                Response::Compact(_) => self.stats.compactions += 1,
                Response::Error(KvError::SessionExpired { .. }) => {
                    client.clerk.reset_session();
                    self.stats.sessions_expired += 1;
                }
                Response::Error(KvError::Compacted { .. } | KvError::FutureRevision { .. }) => {}
                other => return self.bad_reply(c, format!("compaction answered with {other:?}")),
            },
            Purpose::Auth => match response {
                // Refusals (a user that exists, enable without root...) are answers too.
                Response::Auth(_) | Response::Error(KvError::Auth(_)) => self.stats.auth_ops += 1,
                Response::Error(KvError::SessionExpired { .. }) => {
                    client.clerk.reset_session();
                    self.stats.sessions_expired += 1;
                }
                other => return self.bad_reply(c, format!("auth op answered with {other:?}")),
            },
            Purpose::Kv { id, op } => match interpret(&op, &response) {
                Ok(result) => {
                    client.last_ok_invoke_us = Some(f.invoked_us);
                    remember(client, &op, &result, &response);
                    self.history.complete(id, self.now_us, Outcome::Ok(result.clone()));
                    self.stats.ok += 1;
                    kv_trace!(self, "c{c} completes {id}: {result:?}");
                }
                Err(Refusal::Expired) => {
                    client.clerk.reset_session();
                    self.history.complete(id, self.now_us, Outcome::Unknown);
                    self.stats.unknown += 1;
                    self.stats.sessions_expired += 1;
                    kv_trace!(self, "c{c} completes {id}: unknown (session expired)");
                }
                Err(Refusal::Auth(e)) => {
                    // The system answered, so the client made progress; but the same
                    // command sent earlier may still be applied under a later grant.
                    client.last_ok_invoke_us = Some(f.invoked_us);
                    client.seen.remove(op.key());
                    if let Request::Write(Command { request_id: Some(rid), .. }) = &f.request {
                        self.reference.auth.note_refused(id, *rid);
                    }
                    self.history.complete(id, self.now_us, Outcome::Unknown);
                    self.stats.unknown += 1;
                    self.stats.refused += 1;
                    kv_trace!(self, "c{c} completes {id}: unknown (refused: {e})");
                }
                Err(Refusal::Unexpected(what)) => return self.bad_reply(c, what),
            },
        }
        let pause = self.think_time();
        self.arm_client_timer(c, pause);
    }

    fn bad_reply(&mut self, c: usize, what: String) {
        self.record(Violation::new("Client protocol", format!("c{c}: {what}")));
    }

    fn client_give_up(&mut self, c: usize) {
        let f = self.clients[c].current.take().expect("in flight");
        if let Purpose::Kv { id, op } = f.purpose {
            let outcome = if matches!(op, KvOp::Get { .. }) {
                self.stats.failed += 1;
                Outcome::Fail
            } else {
                self.stats.unknown += 1;
                Outcome::Unknown
            };
            kv_trace!(self, "c{c} gives up on {id}: {outcome:?}");
            self.history.complete(id, self.now_us, outcome);
        }
        let pause = self.think_time();
        self.arm_client_timer(c, pause);
    }
}

/// Keeps what a completed operation tells the client about its key and the revision.
fn remember(client: &mut Client, op: &KvOp, result: &KvResult, response: &Response) {
    let key = op.key().to_vec();
    match (op, result) {
        (KvOp::Get { .. }, KvResult::Value(v)) => {
            client.seen.insert(key, v.clone());
        }
        (KvOp::Put { value, .. }, _) => {
            client.seen.insert(key, Some(value.clone()));
        }
        (KvOp::Delete { .. }, _) => {
            client.seen.insert(key, None);
        }
        (KvOp::Cas { new, .. }, KvResult::Cas { swapped: true }) => {
            client.seen.insert(key, Some(new.clone()));
        }
        _ => {
            client.seen.remove(&key);
        }
    }
    if let Response::Get(g) = response {
        client.last_revision = client.last_revision.max(g.revision);
    }
}
