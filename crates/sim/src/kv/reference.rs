//! The reference: the committed log replayed once, in index order, into a state machine
//! of its own, as the oracle the watch and lease checkers compare members against.
//!
//! Every committed entry is applied by some member before any later one is (a member
//! applies densely, or starts from a snapshot some member built by applying), so the
//! first application of each index, across all members, arrives in index order; the
//! cluster feeds exactly those to [`Reference::apply`]. From them the reference keeps:
//! - every event (put or delete, with its previous key-value) in revision order, and
//!   within a revision in the order kv gives: what a watcher must see;
//! - a digest of the state after each index (revision, compact revision, live leases):
//!   what every member must hold when it has applied up to that index;
//! - every revoke (by a client or by expiry) with the keys the lease held.

use super::auth_check::AuthCheck;
use crate::trace::Fnv64;
use kv::{Command, Event, EventKind, Op, Response, StateMachine};
use raft::{Entry, EntryKind, Index};
use std::collections::BTreeMap;

/// A lease revoke as the log carried it out.
#[derive(Clone, Debug)]
pub(crate) struct Revoke {
    /// The lease.
    pub(crate) lease: i64,
    /// The revision of the deletes (unchanged if the lease had no keys).
    pub(crate) revision: u64,
    /// Keys attached to the lease just before the revoke.
    pub(crate) keys: Vec<Vec<u8>>,
    /// Proposed by a leader's lease clock (no session), not by a client.
    pub(crate) expiry: bool,
}

/// The committed history, replayed. See the module docs.
pub(crate) struct Reference {
    sm: StateMachine,
    /// Every committed event in revision order, `prev_kv` filled in.
    pub(crate) events: Vec<Event>,
    /// `digests[i]`: [`state_digest`] after applying index `i` (0: the empty state).
    digests: Vec<u64>,
    /// Every revoke carried out, by log index.
    pub(crate) revokes: BTreeMap<Index, Revoke>,
    /// Stamped commands against the auth state of their index.
    pub(crate) auth: AuthCheck,
}

/// A fingerprint of what lease expiry and revokes may change: revision, compact
/// revision and the live leases (ids and TTLs). Any key deleted or kept differently
/// moves the revision; any lease revoked differently changes the lease list.
pub(crate) fn state_digest(sm: &StateMachine) -> u64 {
    let mut h = Fnv64::new();
    h.write_u64(sm.revision());
    h.write_u64(sm.compact_revision());
    for (id, ttl) in sm.leases() {
        h.write_u64(id as u64);
        h.write_u64(ttl as u64);
    }
    auth_digest(&mut h, sm.auth());
    h.finish()
}

/// The replicated auth state (enabled flag, auth revision, users with their password
/// hashes and roles, roles with their permissions) into `h`: every replica must hold
/// the log's auth state at each index, as it must the leases.
fn auth_digest(h: &mut Fnv64, auth: &kv::AuthState) {
    h.write_u64(u64::from(auth.enabled));
    h.write_u64(auth.revision);
    let mut text = |t: &[u8]| {
        h.write_u64(t.len() as u64);
        h.write(t);
    };
    for (name, user) in auth.users.iter() {
        text(name.as_bytes());
        text(user.password_hash.as_deref().unwrap_or(b"-"));
        user.roles.iter().for_each(|r| text(r.as_bytes()));
    }
    for (name, permissions) in auth.roles.iter() {
        text(name.as_bytes());
        for p in permissions {
            text(&[p.perm_type as u8]);
            text(&p.key);
            text(&p.range_end);
        }
    }
}

/// Watches and the reference use etcd's key-range conventions: an empty `range_end`
/// is the single key, `[0]` everything from `key` on.
pub(crate) fn in_range(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

impl Reference {
    /// An empty store with the members' configuration.
    pub(crate) fn new(config: kv::Config) -> Reference {
        let sm = StateMachine::new(config);
        let digests = vec![state_digest(&sm)];
        Reference {
            sm,
            events: Vec::new(),
            digests,
            revokes: BTreeMap::new(),
            auth: AuthCheck::default(),
        }
    }

    /// Last index applied.
    pub(crate) fn applied_index(&self) -> Index {
        self.digests.len() as Index - 1
    }

    /// The state digest after index `index`, if applied.
    pub(crate) fn digest_at(&self, index: Index) -> Option<u64> {
        self.digests.get(index as usize).copied()
    }

    /// The reference state machine.
    pub(crate) fn state(&self) -> &StateMachine {
        &self.sm
    }

    /// Position in [`Reference::events`] of the first event at or after `revision`.
    pub(crate) fn first_event_from(&self, revision: u64) -> usize {
        self.events.partition_point(|e| e.kv.mod_revision < revision)
    }

    /// Applies the committed entry at the next index; returns the revoke it carried
    /// out, if any. `Err` if the entry is not the next one or the state machine's
    /// own events disagree with the revoke.
    pub(crate) fn apply(&mut self, e: &Entry) -> Result<Option<Revoke>, String> {
        if e.index != self.applied_index() + 1 {
            return Err(format!(
                "index {} applied first while the reference has applied only up to {}",
                e.index,
                self.applied_index()
            ));
        }
        let mut revoke = None;
        if e.kind == EntryKind::Normal {
            // Decoding only matters while leases exist (a revoke of an unknown lease
            // deletes nothing).
            let before = if self.sm.lease_count() > 0 {
                match Command::decode(&e.data) {
                    // Only a live lease is revoked (a retried revoke replays the first
                    // answer and changes nothing).
                    Ok(Command { op: Op::LeaseRevoke { id }, request_id, .. }) => {
                        let keys = self.sm.lease_time_to_live(id, true).map(|t| t.keys);
                        keys.ok().map(|keys| (id, keys, request_id.is_none()))
                    }
                    _ => None,
                }
            } else {
                None
            };
            let rev0 = self.sm.revision();
            let auth_before = self.sm.auth().clone();
            let response = self.sm.apply(e.index, &e.data);
            self.auth.observe(e.index, &auth_before, &e.data, &response);
            let rev1 = self.sm.revision();
            if rev1 > rev0 {
                let batch = self
                    .sm
                    .events(&[0], &[0], rev0 + 1, rev1, true, u64::MAX)
                    .map_err(|err| format!("the reference cannot read its own events: {err}"))?;
                self.events.extend(batch.events);
            }
            if let (Some((lease, keys, expiry)), Response::LeaseRevoked(r)) = (before, &response) {
                let r = Revoke { lease, revision: r.revision, keys, expiry };
                self.check_revoke_events(&r, rev0)?;
                self.revokes.insert(e.index, r.clone());
                revoke = Some(r);
            }
        }
        self.digests.push(state_digest(&self.sm));
        Ok(revoke)
    }

    /// A revoke deletes exactly the keys its lease held, all at one new revision.
    fn check_revoke_events(&self, r: &Revoke, rev_before: u64) -> Result<(), String> {
        let from = self.first_event_from(rev_before + 1);
        // Compared as sets: nothing here depends on the order within a revision.
        let mut deleted: Vec<&[u8]> = self.events[from..]
            .iter()
            .filter(|e| e.kind == EventKind::Delete && e.kv.mod_revision == r.revision)
            .map(|e| e.kv.key.as_slice())
            .collect();
        deleted.sort_unstable();
        let mut expected: Vec<&[u8]> = r.keys.iter().map(Vec::as_slice).collect();
        expected.sort_unstable();
        let revision_ok =
            if r.keys.is_empty() { r.revision == rev_before } else { r.revision == rev_before + 1 };
        if deleted != expected || self.events.len() - from != deleted.len() || !revision_ok {
            let s = |ks: &[&[u8]]| {
                ks.iter().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>().join(",")
            };
            return Err(format!(
                "revoke of lease {} at revision {} (was {rev_before}) deleted [{}] but the lease held [{}]",
                r.lease,
                r.revision,
                s(&deleted),
                s(&expected)
            ));
        }
        Ok(())
    }
}
