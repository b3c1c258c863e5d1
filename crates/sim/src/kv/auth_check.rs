//! Clients acting as users, and the check that no command is served under a
//! permission it did not hold when it was applied.
//!
//! In the seeds that change the auth state, most clients act as a user: `root`, or
//! `u0` / `u1`, whose roles and permissions the clients' auth changes grant and revoke
//! (`client::draw_auth_op`). Their commands carry a [`kv::AuthStamp`] as the server's
//! do: the member that receives a request stamps it with the auth revision it has
//! applied ([`stamp_at_member`]), and apply checks the command again under the auth
//! state of its index, refusing a stamp older than that state. Unlike the server, the
//! member does not check before proposing, so every refusal is apply's, which is what
//! is under test; a refusal for an old revision is sent again, as the server does.
//!
//! The check ([`AuthCheck::observe`]) runs where the reference applies each committed
//! entry for the first time, in index order, with the auth state just before that
//! index (the oracle). A stamped command that succeeded while auth was on must have had
//! a stamp no older than that state ("Auth (old stamp served)") and every permission
//! it needs, judged here on its own from the users, roles and permissions of that
//! state rather than by the checks of `kv` ("Auth (permission not held at apply)").
//! Members are held to the reference by the per-index state digest (revision and auth
//! state included), so a member that served what the reference refused is caught too.

use super::cluster::KvConfig;
use super::reference::in_range;
use crate::checker::Violation;
use kv::{
    AuthOp, AuthStamp, AuthState, Command, KvError, Op, PermissionType, RequestId, RequestOp,
    Response, TxnRequest,
};
use lincheck::{History, KvOp, KvResult, OpId};
use node::Request;
use std::collections::{BTreeMap, BTreeSet};

/// Who client `c` acts as: `None` sends unstamped commands (as every client does in
/// seeds without auth changes), else the user name.
///
/// One client in four is restricted (`u0` or `u1`), two are root: a refused write is an
/// unknown outcome in the history (a copy sent earlier may still be applied under a
/// later grant), and too many of them exhaust the linearizability search.
pub(crate) fn client_user(cfg: &KvConfig, c: usize) -> Option<&'static str> {
    if cfg.auth_share <= 0.0 {
        return None;
    }
    match c % 4 {
        0 => None,
        1 => Some(["u0", "u1"][(c / 4) % 2]),
        _ => Some("root"),
    }
}

/// While `auth` is off: the next of user root, role root, the grant of one to the
/// other, and auth enable.
pub(crate) fn next_enable_step(auth: &AuthState) -> Option<AuthOp> {
    if auth.enabled {
        return None;
    }
    let root = || "root".to_string();
    Some(match auth.users.get("root") {
        None => AuthOp::UserAdd { name: root(), password_hash: Some(b"h".to_vec()) },
        Some(_) if !auth.roles.contains_key("root") => AuthOp::RoleAdd { name: root() },
        Some(u) if !u.roles.contains("root") => {
            AuthOp::UserGrantRole { user: root(), role: root() }
        }
        Some(_) => AuthOp::Enable,
    })
}

/// Marks the client command `request` carries as sent by `user` (the revision is the
/// receiving member's to fill in); reads and unnamed clients stay unstamped.
pub(crate) fn stamp_as(request: &mut Request, user: Option<&str>) {
    if let (Request::Write(command), Some(user)) = (request, user) {
        command.auth = Some(AuthStamp { user: user.to_string(), revision: 0 });
    }
}

/// Stamps the client command `request` carries (if it names a user) with the auth
/// revision the receiving member has applied, as a server stamps with its own.
pub(crate) fn stamp_at_member(request: &mut Request, auth: &AuthState) {
    if let Request::Write(Command { auth: Some(stamp), .. }) = request {
        stamp.revision = auth.revision;
    }
}

/// A permission a command needs on one key.
struct Need<'a> {
    key: &'a [u8],
    wanted: PermissionType,
}

/// What `op` needs, key by key; `None` for commands the oracle does not judge (ranges
/// over several keys, leases, compaction, auth and membership: the sim's users stamp
/// only single-key reads, writes and transactions).
fn needs(op: &Op) -> Option<Vec<Need<'_>>> {
    let mut out = Vec::new();
    let ok = match op {
        Op::Put(p) => p.lease == 0 && put_needs(&p.key, p.prev_kv, &mut out),
        Op::Append { key, .. } => {
            out.push(Need { key, wanted: PermissionType::Read });
            out.push(Need { key, wanted: PermissionType::Write });
            true
        }
        Op::Get { key } => {
            out.push(Need { key, wanted: PermissionType::Read });
            true
        }
        Op::Range(r) => {
            out.push(Need { key: &r.key, wanted: PermissionType::Read });
            r.range_end.is_empty()
        }
        Op::DeleteRange(d) => d.range_end.is_empty() && put_needs(&d.key, d.prev_kv, &mut out),
        Op::Txn(t) => txn_needs(t, &mut out),
        _ => false,
    };
    ok.then_some(out)
}

fn put_needs<'a>(key: &'a [u8], prev_kv: bool, out: &mut Vec<Need<'a>>) -> bool {
    out.push(Need { key, wanted: PermissionType::Write });
    if prev_kv {
        out.push(Need { key, wanted: PermissionType::Read });
    }
    true
}

/// Every compare reads its key; every operation of both branches needs its own.
fn txn_needs<'a>(t: &'a TxnRequest, out: &mut Vec<Need<'a>>) -> bool {
    let compares_ok = t.compare.iter().all(|c| {
        out.push(Need { key: &c.key, wanted: PermissionType::Read });
        c.range_end.is_empty()
    });
    compares_ok
        && t.success.iter().chain(&t.failure).all(|op| match op {
            RequestOp::Range(r) => {
                out.push(Need { key: &r.key, wanted: PermissionType::Read });
                r.range_end.is_empty()
            }
            RequestOp::Put(p) => p.lease == 0 && put_needs(&p.key, p.prev_kv, out),
            RequestOp::DeleteRange(d) => {
                d.range_end.is_empty() && put_needs(&d.key, d.prev_kv, out)
            }
            RequestOp::Txn(inner) => txn_needs(inner, out),
        })
}

/// The oracle: does `user` hold `need` under `auth`? A user with the root role holds
/// everything; anyone else needs a permission of one of their (existing) roles whose
/// type includes the wanted one and whose range holds the key.
fn holds(auth: &AuthState, user: &str, need: &Need<'_>) -> bool {
    let Some(u) = auth.users.get(user) else { return false };
    // etcd's root role, which bypasses every check.
    if u.roles.contains("root") {
        return true;
    }
    u.roles.iter().filter_map(|r| auth.roles.get(r)).flatten().any(|p| {
        let type_ok = p.perm_type == PermissionType::ReadWrite || p.perm_type == need.wanted;
        type_ok && in_range(&p.key, &p.range_end, need.key)
    })
}

/// The check at apply, with counters of what it saw.
#[derive(Default)]
pub(crate) struct AuthCheck {
    /// Stamped commands applied while auth was on that succeeded.
    pub(crate) served: u64,
    /// Stamped commands applied while auth was on that were refused.
    pub(crate) refused: u64,
    /// Per session, the last sequence number the log executed: a later entry with the
    /// same or a lower one is a duplicate, answered from the session (the first
    /// execution's answer) or refused, never executed, so not judged.
    executed: BTreeMap<u64, u64>,
    /// Every (session, sequence number) the log executed.
    executed_ever: BTreeSet<(u64, u64)>,
    /// History operations whose command was refused at apply, recorded unknown: those
    /// the log never executed are settled as failed before the history is checked.
    refused_ops: Vec<(OpId, RequestId)>,
    /// The first violation seen, until the cluster takes it.
    violation: Option<Violation>,
}

impl AuthCheck {
    /// The entry at `index` (`data`) was applied under `before` (the auth state after
    /// index - 1) and answered `response`. See the module docs.
    pub(crate) fn observe(
        &mut self,
        index: u64,
        before: &AuthState,
        data: &[u8],
        response: &Response,
    ) {
        let Ok(Command { auth, op, request_id }) = Command::decode(data) else { return };
        let refused =
            matches!(response, Response::Error(KvError::Auth(_) | KvError::SessionExpired { .. }));
        if let Some(id) = request_id {
            let last = self.executed.entry(id.client_id).or_default();
            if id.seq <= *last {
                return;
            }
            if !refused {
                *last = id.seq;
                self.executed_ever.insert((id.client_id, id.seq));
            }
        }
        let Some(stamp) = auth else { return };
        if !before.enabled || self.violation.is_some() {
            return;
        }
        if let Response::Error(_) = response {
            self.refused += 1;
            return;
        }
        self.served += 1;
        if stamp.revision < before.revision {
            let details = format!(
                "index {index}: {op:?} by {:?} stamped at auth revision {} succeeded ({response:?}) though the auth state there is at revision {}",
                stamp.user, stamp.revision, before.revision
            );
            self.violation = Some(Violation::new("Auth (old stamp served)", details));
            return;
        }
        let Some(needs) = needs(&op) else { return };
        if let Some(n) = needs.iter().find(|n| !holds(before, &stamp.user, n)) {
            let user = before.users.get(&stamp.user);
            let details = format!(
                "index {index}: {op:?} by {:?} succeeded ({response:?}) without {:?} on {} under the auth state there (revision {}; user {user:?}; roles {:?})",
                stamp.user,
                n.wanted,
                String::from_utf8_lossy(n.key),
                before.revision,
                before.roles
            );
            self.violation = Some(Violation::new("Auth (permission not held at apply)", details));
        }
    }

    /// History operation `op` was answered with a refusal at apply of its command `id`.
    pub(crate) fn note_refused(&mut self, op: OpId, id: RequestId) {
        self.refused_ops.push((op, id));
    }

    /// `history` with each refused operation whose command the log never executed (no
    /// copy of it, sent before or after, ran) settled as failed rather than unknown:
    /// too many unknown writes exhaust the linearizability search.
    pub(crate) fn settled(&self, history: &History<KvOp, KvResult>) -> History<KvOp, KvResult> {
        let mut h = history.clone();
        for (op, id) in &self.refused_ops {
            if !self.executed_ever.contains(&(id.client_id, id.seq)) {
                h.settle_failed(*op);
            }
        }
        h
    }

    /// The first violation seen, once.
    pub(crate) fn take_violation(&mut self) -> Option<Violation> {
        self.violation.take()
    }
}
