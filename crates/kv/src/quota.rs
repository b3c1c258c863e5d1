//! The space quota's arithmetic and the replicated alarms.
//!
//! etcd measures its quota on the bolt file, which only shrinks at defragmentation.
//! This crate has no file: it keeps an estimate of the bytes its state holds, updated
//! in O(1) by every change (a history entry written or pruned, a lease granted or
//! revoked) and recomputed only when a snapshot is restored. It is deterministic, so
//! every replica holds the same number, and it shrinks as soon as compaction prunes
//! history (etcd's only at defrag).
//!
//! The quota is checked where a write is proposed (the leader's node): a write whose
//! [`space_cost`] would take the estimate to the quota or past it is refused and the
//! NOSPACE alarm is raised through the log, as etcd's quota check does on the member
//! a client reaches. Refusal at apply time depends only on the replicated alarm set,
//! never on the estimate, so every member refuses the same entries.

use std::collections::BTreeSet;

use crate::mvcc::Record;
use crate::types::{AlarmAction, AlarmMember, AlarmType, KvError, Op, RequestOp, TxnRequest};

/// Bytes counted per stored version of a key on top of its key and value: revision,
/// sub-revision, create revision, version, lease and the watch index entry.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;
/// Bytes counted per live lease.
pub const LEASE_OVERHEAD_BYTES: u64 = 64;
/// Bytes counted for an empty store (revision counters, config, alarms): what an empty
/// etcd reports in use (16 KiB), so a size is never 0.
pub const STATE_BASE_BYTES: u64 = 16 * 1024;

/// What one history entry counts toward the size estimate.
pub(crate) fn entry_bytes(key: &[u8], record: &Record) -> u64 {
    let value = match record {
        Record::Put(v) => v.value().len() as u64,
        Record::Tombstone => 0,
    };
    ENTRY_OVERHEAD_BYTES + key.len() as u64 + value
}

/// Bytes a command may add to the store, for the quota check before proposing it: a
/// put's or append's new entry, a lease grant's lease, a transaction's costlier branch
/// (nested transactions count their costlier branch too). 0 for commands that cannot
/// grow the store (reads, deletes, compactions, alarms).
///
/// etcd 3.4 counts only the puts at a transaction's top level; nested puts count here
/// too, or a nested transaction would write past the quota.
pub fn space_cost(op: &Op) -> u64 {
    let put = |key: &[u8], value: usize| ENTRY_OVERHEAD_BYTES + key.len() as u64 + value as u64;
    match op {
        Op::Put(r) => put(&r.key, r.value.len()),
        Op::Append { key, suffix } => put(key, suffix.len()),
        Op::Txn(t) => txn_cost(t),
        Op::LeaseGrant { .. } => LEASE_OVERHEAD_BYTES,
        _ => 0,
    }
}

fn txn_cost(t: &TxnRequest) -> u64 {
    let branch = |ops: &[RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(r) => ENTRY_OVERHEAD_BYTES + (r.key.len() + r.value.len()) as u64,
                RequestOp::Txn(n) => txn_cost(n),
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => 0,
            })
            .fold(0u64, u64::saturating_add)
    };
    branch(&t.success).max(branch(&t.failure))
}

/// The raised alarms, in the replicated state and in snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Alarms {
    pub(crate) raised: BTreeSet<AlarmMember>,
}

impl Alarms {
    fn is_raised(&self, alarm: AlarmType) -> bool {
        self.raised.iter().any(|a| a.alarm == alarm)
    }

    /// Why `op` is refused under the raised alarms, if it is: etcd's "capped" applier
    /// under NOSPACE (puts, transactions with puts, lease grants) and its "corrupt"
    /// applier under CORRUPT (everything but alarms and lease queries).
    pub(crate) fn refusal(&self, op: &Op) -> Option<KvError> {
        if self.raised.is_empty() {
            return None;
        }
        let passes_corrupt = matches!(
            op,
            Op::Alarm { .. }
                | Op::RegisterSession
                | Op::LeaseKeepAlive { .. }
                | Op::LeaseTimeToLive { .. }
        );
        if !passes_corrupt && self.is_raised(AlarmType::Corrupt) {
            return Some(KvError::Corrupt);
        }
        if space_cost(op) > 0 && self.is_raised(AlarmType::Nospace) {
            return Some(KvError::NoSpace);
        }
        None
    }

    /// Applies an alarm command; returns the alarms etcd's answer lists.
    pub(crate) fn apply(
        &mut self,
        action: AlarmAction,
        member_id: u64,
        alarm: AlarmType,
    ) -> Vec<AlarmMember> {
        let m = AlarmMember { member_id, alarm };
        match action {
            AlarmAction::Get => self
                .raised
                .iter()
                .filter(|a| alarm == AlarmType::None || a.alarm == alarm)
                .copied()
                .collect(),
            AlarmAction::Activate if alarm != AlarmType::None => {
                self.raised.insert(m);
                vec![m]
            }
            AlarmAction::Deactivate if self.raised.remove(&m) => vec![m],
            AlarmAction::Activate | AlarmAction::Deactivate => Vec::new(),
        }
    }
}
