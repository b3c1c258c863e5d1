//! `Maintenance.HashKV` and `Maintenance.Hash`: a checksum of the key-value state, for
//! comparing members (`etcdctl endpoint hashkv`).
//!
//! etcd hashes its MVCC history (every revision from the compaction on) in bolt's
//! on-disk encoding; raftkv has neither that encoding nor a reason to copy it, so the
//! values differ from etcd's and mean something only next to each other. What holds is
//! what the API is for: every member that applied the same log gives the same hash for
//! the same revision. The hash is a CRC32C over every key live at the revision, in key
//! order, each with its create and mod revisions, version, lease and value, every
//! field length-prefixed so no two different states encode alike.
//!
//! It runs on a copy of the state machine (an O(1) view of its persistent maps), off
//! the node thread, reading the keys in pages so memory stays bounded.

use kv::{KvError, RangeRequest, StateMachine};

/// Keys read per page while hashing.
const PAGE_KEYS: u64 = 1024;

/// The hash of the keys live at `revision` (0: the current revision).
pub fn hash_kv(state: &StateMachine, revision: u64) -> Result<u32, KvError> {
    let revision = if revision == 0 { state.revision() } else { revision };
    let mut crc = Crc32c::new();
    let mut key = vec![0];
    loop {
        let page = state.range(&RangeRequest {
            key: key.clone(),
            range_end: vec![0],
            limit: PAGE_KEYS,
            revision,
            ..Default::default()
        })?;
        for kv in &page.kvs {
            crc.field(&kv.key);
            for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease as u64] {
                crc.update(&n.to_le_bytes());
            }
            crc.field(&kv.value);
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                key = last.key.clone();
                key.push(0);
            }
            _ => return Ok(crc.finish()),
        }
    }
}

/// CRC32C (Castagnoli), bitwise over a 256-entry table.
struct Crc32c(u32);

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
    fn new() -> Self {
        Crc32c(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = CRC32C_TABLE[((self.0 ^ u32::from(*b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    /// A length-prefixed byte string.
    fn field(&mut self, bytes: &[u8]) {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published check value of CRC-32C: "123456789" → 0xE3069283.
    #[test]
    fn crc32c_matches_the_published_check_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
    }
}
