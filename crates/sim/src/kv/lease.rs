//! The lease workload: clients that grant leases, attach keys to them, keep some alive
//! and let others lapse; the leader's lease clock driven by simulated time; and the
//! lease checkers.
//!
//! Expiry runs in the member code itself: every tick the simulator hands each member
//! its local clock ([`node::Node::advance_lease_clock`], ticks × the nominal period, so
//! it drifts with the member's tick rate) exactly as the server's node thread hands it
//! real elapsed time; the leader proposes a revoke for each lease past its deadline and
//! a new leader starts every lease afresh.
//!
//! Leased keys (`l0`, `l1`, ...) are apart from the linearizability keys: a revoke
//! deletes them without a client operation, which the register model does not know.
//!
//! ## What is checked
//! - **Same lease state at each index** — after every `poll`, a member that has applied
//!   up to index *i* must hold the reference's revision, compact revision and live
//!   leases after *i* (so a revoke applied an entry late, or an expiry carried out
//!   without a revoke entry, differs at once).
//! - **Keys go with their lease, at the revoke's revision, on every member** — the
//!   reference checks that a revoke deletes exactly the keys the lease held at one new
//!   revision; each member that applies the revoke must show a delete of each of those
//!   keys at that revision in its own history (unless compacted).
//! - **No early expiry** — what the implementation claims: a lease lives at least its
//!   TTL after the leader received its last acknowledged keep-alive (or after its grant
//!   was sent), measured on the leader's clock. In simulated time, allowing for clock
//!   drift and one tick of clock granularity: an expiry revoke of lease *L* is not
//!   applied anywhere before `received + TTL·(1 − drift) − tick·(1 + drift)`.
//! - **Expiry happens** — once clients stop, every lease is revoked within
//!   [`LEASE_EXPIRY_BOUND_US`] (the swarm's liveness phase and `drain`).

use super::cluster::{kv_trace, KvCluster};
use super::reference::{state_digest, Revoke};
use crate::checker::Violation;
use kv::{Command, EventKind, KvError, Op, PutRequest, Response};
use node::Request;
use raft::Index;
use std::fmt::Write;

/// After the clients stop, every lease must be gone within this.
pub const LEASE_EXPIRY_BOUND_US: u64 = 20_000_000;

/// Most leases one client holds at once.
const LEASES_PER_CLIENT_MAX: usize = 3;

/// A lease operation of a client.
#[derive(Clone, Debug)]
pub(crate) enum LeaseOp {
    /// Grant a lease; `keep`: keep it alive afterwards.
    Grant { ttl_secs: i64, keep: bool },
    /// Put a leased key attached to `lease`.
    Put { lease: i64, key: Vec<u8>, value: Vec<u8> },
    /// Revoke `lease`.
    Revoke { lease: i64 },
    /// Keep `lease` alive.
    KeepAlive { lease: i64 },
}

impl std::fmt::Display for LeaseOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            LeaseOp::Grant { ttl_secs, keep } => {
                write!(f, "lease grant {ttl_secs} s{}", if *keep { " (to keep alive)" } else { "" })
            }
            LeaseOp::Put { lease, key, value } => {
                write!(f, "put {} {} with lease {lease}", s(key), s(value))
            }
            LeaseOp::Revoke { lease } => write!(f, "lease revoke {lease}"),
            LeaseOp::KeepAlive { lease } => write!(f, "lease keep-alive {lease}"),
        }
    }
}

/// A lease a client holds.
#[derive(Clone, Debug)]
pub(crate) struct HeldLease {
    id: i64,
    ttl_secs: i64,
    keep: bool,
    next_keep_alive_us: u64,
}

fn keep_alive_period_us(ttl_secs: i64) -> u64 {
    (ttl_secs.max(1) as u64) * 1_000_000 / 3
}

impl KvCluster {
    /// A keep-alive client `c` owes now, if any (etcd's client sends one every third of
    /// the TTL).
    pub(crate) fn due_keep_alive(&self, c: usize) -> Option<LeaseOp> {
        let now = self.now_us;
        let held = &self.clients[c].leases;
        held.iter()
            .find(|l| l.keep && l.next_keep_alive_us <= now)
            .map(|l| LeaseOp::KeepAlive { lease: l.id })
    }

    /// Draws a lease operation for client `c`.
    pub(crate) fn draw_lease_op(&mut self, c: usize, value: Vec<u8>) -> LeaseOp {
        let r = &mut self.rng_ops;
        let held = &self.clients[c].leases;
        if held.is_empty() || (held.len() < LEASES_PER_CLIENT_MAX && r.chance(0.3)) {
            let ttl_secs = r.range(1, self.cfg.lease_ttl_secs_max as u64 + 1) as i64;
            return LeaseOp::Grant { ttl_secs, keep: r.chance(0.5) };
        }
        let lease = held[r.range(0, held.len() as u64) as usize].id;
        if r.chance(0.1) {
            return LeaseOp::Revoke { lease };
        }
        let key = format!("l{}", r.range(0, self.cfg.lease_keys.max(1) as u64)).into_bytes();
        LeaseOp::Put { lease, key, value }
    }

    /// The request for a lease operation (writes go with the client's session; a
    /// keep-alive does not touch the log and carries none, as in the server).
    pub(crate) fn lease_request(&mut self, c: usize, op: &LeaseOp) -> Request {
        let clerk = &mut self.clients[c].clerk;
        match op.clone() {
            LeaseOp::Grant { ttl_secs, .. } => {
                Request::Write(clerk.new_command(Op::LeaseGrant { id: 0, ttl_secs }))
            }
            LeaseOp::Put { lease, key, value } => {
                let put = PutRequest { key, value, lease, ..Default::default() };
                Request::Write(clerk.new_command(Op::Put(put)))
            }
            LeaseOp::Revoke { lease } => {
                Request::Write(clerk.new_command(Op::LeaseRevoke { id: lease }))
            }
            LeaseOp::KeepAlive { lease } => {
                Request::Write(Command::new(Op::LeaseKeepAlive { id: lease }))
            }
        }
    }

    fn drop_lease(&mut self, c: usize, lease: i64) {
        self.clients[c].leases.retain(|l| l.id != lease);
    }

    /// Lease `lease` must live until at least `from_us` + its TTL, give or take drift.
    fn protect_lease(&mut self, lease: i64, from_us: u64, ttl_secs: i64) {
        let ttl_us = ttl_secs.max(1) as f64 * 1e6;
        let drift = self.cfg.clock_drift;
        let tick = self.cfg.tick_interval_us as f64 * (1.0 + drift);
        let until = from_us as f64 + ttl_us * (1.0 - drift) - tick;
        let until = until.max(0.0) as u64;
        let entry = self.lease_protected_until.entry(lease).or_default();
        *entry = (*entry).max(until);
    }

    /// The answer to a lease operation; `Err` if it makes no sense for the operation.
    pub(crate) fn lease_answered(
        &mut self,
        c: usize,
        op: LeaseOp,
        response: Response,
        (invoked_us, received_us): (u64, u64),
    ) -> Result<(), String> {
        if let Response::Error(KvError::SessionExpired { .. }) = response {
            self.clients[c].clerk.reset_session();
            self.stats.sessions_expired += 1;
            if let LeaseOp::Revoke { lease } = op {
                self.drop_lease(c, lease);
            }
            return Ok(());
        }
        let gone = matches!(response, Response::Error(KvError::LeaseNotFound { .. }));
        match (op, response) {
            (LeaseOp::Grant { keep, .. }, Response::LeaseGranted(g)) => {
                // The grant applied no earlier than it was sent; the leader's deadline
                // starts at its apply (or at a later takeover).
                self.protect_lease(g.id, invoked_us, g.ttl_secs);
                self.stats.leases_granted += 1;
                let next_keep_alive_us = self.now_us + keep_alive_period_us(g.ttl_secs);
                let held = HeldLease { id: g.id, ttl_secs: g.ttl_secs, keep, next_keep_alive_us };
                self.clients[c].leases.push(held);
                kv_trace!(
                    self,
                    "c{c} holds lease {} ttl {} s{}",
                    g.id,
                    g.ttl_secs,
                    if keep { " (kept alive)" } else { "" }
                );
            }
            (LeaseOp::KeepAlive { lease }, Response::LeaseTtl(t)) if t.id == lease => {
                self.protect_lease(lease, received_us, t.granted_ttl_secs);
                self.stats.keep_alives_acked += 1;
                let next = self.now_us + keep_alive_period_us(t.granted_ttl_secs);
                if let Some(l) = self.clients[c].leases.iter_mut().find(|l| l.id == lease) {
                    l.next_keep_alive_us = next;
                    l.ttl_secs = t.granted_ttl_secs;
                }
            }
            (LeaseOp::Put { .. }, Response::Put(_)) => {}
            (LeaseOp::Revoke { lease }, Response::LeaseRevoked(_)) => self.drop_lease(c, lease),
            (
                LeaseOp::Revoke { lease }
                | LeaseOp::Put { lease, .. }
                | LeaseOp::KeepAlive { lease },
                _,
            ) if gone => {
                self.drop_lease(c, lease);
            }
            (op, response) => return Err(format!("{op:?} was answered with {response:?}")),
        }
        Ok(())
    }

    /// A revoke reached the reference (its first application anywhere): an expiry must
    /// not come before the lease's protected time.
    pub(crate) fn on_reference_revoke(
        &mut self,
        index: Index,
        r: &Revoke,
    ) -> Result<(), Violation> {
        kv_trace!(
            self,
            "lease {} {} at index {index} rev {}, {} keys",
            r.lease,
            if r.expiry { "expires" } else { "revoked" },
            r.revision,
            r.keys.len()
        );
        if !r.expiry {
            self.stats.leases_revoked += 1;
            return Ok(());
        }
        self.stats.leases_expired += 1;
        let until = self.lease_protected_until.get(&r.lease).copied().unwrap_or(0);
        if self.now_us < until {
            let details = format!(
                "lease {} expired (revoke at index {index}) at {} ms, but an acknowledged grant or keep-alive keeps it until {} ms",
                r.lease,
                self.now_us / 1000,
                until / 1000
            );
            return Err(Violation::new("Lease (early expiry)", details));
        }
        Ok(())
    }

    /// Member `idx` has applied up to its current index (from `from` on): its lease
    /// state must be the reference's at that index, and every revoke in between must
    /// have deleted its keys at its revision in the member's own history.
    pub(crate) fn check_member_leases(&self, idx: usize, from: Index) -> Result<(), Violation> {
        let m = &self.members[idx];
        let Some(node) = m.node.as_ref() else { return Ok(()) };
        let (id, applied, state) = (m.id, node.applied_index(), node.state());
        let expected = self.reference.digest_at(applied);
        if expected != Some(state_digest(state)) {
            let r = self.reference.state();
            let details = format!(
                "n{id} at index {applied} has revision {}, compact revision {}, leases {:?}, auth enabled {} at auth revision {}; the log's state there differs (reference at index {}: revision {}, leases {:?}, auth enabled {} at auth revision {})",
                state.revision(),
                state.compact_revision(),
                state.leases(),
                state.auth().enabled,
                state.auth().revision,
                self.reference.applied_index(),
                r.revision(),
                r.leases(),
                r.auth().enabled,
                r.auth().revision
            );
            return Err(Violation::new("Lease (replica lease state)", details));
        }
        let revokes = if from < applied {
            self.reference.revokes.range(from + 1..=applied)
        } else {
            self.reference.revokes.range(0..0)
        };
        for (index, r) in revokes {
            if r.revision <= state.compact_revision() {
                continue;
            }
            for key in &r.keys {
                let batch = state.events(key, &[], r.revision, r.revision, false, 8);
                let deleted = batch.as_ref().is_ok_and(|b| {
                    b.events
                        .iter()
                        .any(|e| e.kind == EventKind::Delete && e.kv.mod_revision == r.revision)
                });
                if !deleted {
                    let details = format!(
                        "n{id} applied the revoke of lease {} (index {index}) but shows no delete of {} at its revision {}: {batch:?}",
                        r.lease,
                        String::from_utf8_lossy(key),
                        r.revision
                    );
                    return Err(Violation::new("Lease (keys deleted with their lease)", details));
                }
            }
        }
        Ok(())
    }

    /// Live leases in the committed state.
    pub fn lease_count(&self) -> usize {
        self.reference.state().lease_count()
    }
}
