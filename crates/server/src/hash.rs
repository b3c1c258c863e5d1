//! `Maintenance.HashKV` and `Maintenance.Hash`: a checksum of the key-value state, for
//! comparing members (`etcdctl endpoint hashkv`) — the number etcd 3.4 computes, so an
//! etcd cluster and the raftkv cluster restored from its snapshot (or the reverse) can
//! be compared too.
//!
//! etcd 3.4 (`HashByRev`) runs a CRC-32C over the name `key` and then, in revision
//! order, each entry of its `key` bucket (revision key and `mvccpb.KeyValue` bytes,
//! see [`crate::etcd_db`]) with a main revision up to the hashed revision `r`; of the
//! entries at or below the compact revision `c` it takes only those a compaction at `r`
//! would keep — the key's newest change at or below `r`, if a put — unless no key is
//! live at `r` at all. The entries are the state's stored changes
//! ([`kv::StateMachine::for_each_stored_change`]), which do not depend on how far
//! pruning has got, so every member gives the same hash for the same revision.
//!
//! It runs on a copy of the state machine (an O(1) view of its persistent maps), off
//! the node thread; memory is one entry at a time.

use crate::etcd_db::{change_value, revision_key};
use kv::{KvError, RangeRequest, StateMachine};

/// etcd 3.4's HashKV of the state at `revision` (0: the current revision).
pub fn hash_kv(state: &StateMachine, revision: u64) -> Result<u32, KvError> {
    let revision = if revision == 0 { state.revision() } else { revision };
    let any_live = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        count_only: true,
        ..Default::default()
    };
    // Also refuses a compacted or future revision, as etcd does.
    let nothing_live = state.range(&any_live)?.count == 0;
    let compacted = state.compact_revision();
    let mut crc = Crc32c::new();
    crc.update(b"key");
    state.for_each_stored_change(&mut |c| {
        let main = c.kv.mod_revision;
        if main > revision {
            return Ok(());
        }
        if main <= compacted && !nothing_live && !kept_at(state, c, revision)? {
            return Ok(());
        }
        crc.update(&revision_key(main, c.sub, c.tombstone));
        crc.update(&change_value(c));
        Ok(())
    })?;
    Ok(crc.finish())
}

/// Whether a compaction at `revision` keeps change `c`: it is the key's newest change
/// at or below `revision`, and a put.
fn kept_at(state: &StateMachine, c: &kv::StoredChange, revision: u64) -> Result<bool, KvError> {
    if c.tombstone {
        return Ok(false);
    }
    let at =
        RangeRequest { key: c.kv.key.clone(), revision, keys_only: true, ..Default::default() };
    let live = state.range(&at)?;
    Ok(live.kvs.first().is_some_and(|kv| kv.mod_revision == c.kv.mod_revision))
}

/// CRC32C (Castagnoli), bitwise over a 256-entry table.
pub(crate) struct Crc32c(u32);

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32c {
    pub(crate) fn new() -> Self {
        Crc32c(!0)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = CRC32C_TABLE[((self.0 ^ u32::from(*b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    pub(crate) fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::{Command, Config, DeleteRangeRequest, Op, PutRequest, RequestOp, TxnRequest};

    fn put(key: &str, value: &str, lease: i64) -> PutRequest {
        PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() }
    }

    /// Known answer from a real etcd 3.4.23: after `put a 1; put b 2; put a 3; del b;
    /// put c 4; lease grant 600; put d 5 --lease; compact 4; put e 6; txn {put x 1;
    /// put y 2; del c}`, `etcdctl endpoint hashkv` printed 1314050594 at revision 9.
    #[test]
    fn hash_kv_matches_etcd_3_4() {
        let lease = 0x132c_a236_c2e2_4f0a;
        let del = |k: &str| DeleteRangeRequest { key: k.into(), ..Default::default() };
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(put("x", "1", 0)),
                RequestOp::Put(put("y", "2", 0)),
                RequestOp::DeleteRange(del("c")),
            ],
            failure: vec![],
        };
        let ops = [
            Op::Put(put("a", "1", 0)),
            Op::Put(put("b", "2", 0)),
            Op::Put(put("a", "3", 0)),
            Op::DeleteRange(del("b")),
            Op::Put(put("c", "4", 0)),
            Op::LeaseGrant { id: lease, ttl_secs: 600 },
            Op::Put(put("d", "5", lease)),
            Op::Compact { revision: 4 },
            Op::Put(put("e", "6", 0)),
            Op::Txn(txn),
        ];
        let mut sm = StateMachine::new(Config::default());
        for (i, op) in ops.into_iter().enumerate() {
            sm.apply_command(i as u64 + 1, &Command::new(op));
        }
        assert_eq!(sm.revision(), 9);
        assert_eq!(hash_kv(&sm, 0).unwrap(), 1_314_050_594);
        assert_eq!(hash_kv(&sm, 9).unwrap(), 1_314_050_594);
        assert!(matches!(hash_kv(&sm, 3), Err(KvError::Compacted { .. })));
    }

    /// The published check value of CRC-32C: "123456789" → 0xE3069283.
    #[test]
    fn crc32c_matches_the_published_check_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
    }
}
