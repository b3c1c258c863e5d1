//! Test helpers: a driver that applies commands through the encoded log
//! path, and a seeded RNG.

use kv::*;

/// splitmix64: a tiny seeded generator, so every random test replays from
/// its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A state machine fed like the Raft driver feeds it: encoded entries at
/// increasing log indices.
pub struct Node {
    pub sm: StateMachine,
    pub index: u64,
}

impl Node {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }
    pub fn with_config(config: Config) -> Self {
        Node { sm: StateMachine::new(config), index: 0 }
    }
    pub fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        let bytes = command.encode();
        assert_eq!(Command::decode(&bytes).as_ref(), Ok(&command), "codec round trip");
        self.sm.apply(self.index, &bytes)
    }
    pub fn op(&mut self, op: Op) -> Response {
        self.apply(Command::new(op))
    }
    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.op(Op::Put(put_req(key, value))) {
            Response::Put(r) => r,
            other => panic!("put failed: {other:?}"),
        }
    }
    pub fn delete(&mut self, key: &str, range_end: &[u8]) -> DeleteRangeResponse {
        match self.op(Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.to_vec(),
            prev_kv: true,
        })) {
            Response::DeleteRange(r) => r,
            other => panic!("delete failed: {other:?}"),
        }
    }
    pub fn range(&mut self, request: RangeRequest) -> Result<RangeResponse, KvError> {
        // A read through the log must agree with the local read path.
        let local = self.sm.range(&request);
        let logged = match self.op(Op::Range(request)) {
            Response::Range(r) => Ok(r),
            Response::Error(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(local, logged);
        logged
    }
    pub fn txn(&mut self, txn: TxnRequest) -> Result<TxnResponse, KvError> {
        match self.op(Op::Txn(txn)) {
            Response::Txn(r) => Ok(r),
            Response::Error(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    pub fn value(&self, key: &str) -> Option<String> {
        self.sm.get(key.as_bytes()).map(|kv| String::from_utf8(kv.value).unwrap())
    }
}

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

pub fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
}

/// Snapshot bytes of a state machine.
/// Bytes of an empty auth section (auth off, revision 1, no users, no roles):
/// what a version 5 snapshot adds to a version 4 one for a store without auth.
pub const EMPTY_AUTH_SECTION: usize = 1 + 8 + 8 + 8;

/// Bytes of an empty member table (no members, no removed ids): what a version 6
/// snapshot adds to a version 5 one for a store without members.
pub const EMPTY_MEMBERS_SECTION: usize = 8 + 8;

/// A current snapshot of a store without members, rewritten as version 5 (before
/// the member table): its empty members section cut, the version byte set and the
/// CRC redone.
pub fn as_version_5(current: &[u8]) -> Vec<u8> {
    let body_end = current.len() - 4;
    let members_at = body_end - EMPTY_MEMBERS_SECTION;
    assert_eq!(&current[members_at..body_end], &[0u8; 16][..], "members section is empty");
    let mut v5 = current[..members_at].to_vec();
    v5[8] = 5;
    let crc = crc32c::crc32c(&v5);
    v5.extend_from_slice(&crc.to_le_bytes());
    v5
}

/// A current snapshot of a store without auth or members, rewritten as version 4
/// (before auth): its empty auth section cut, the version byte set and the CRC redone.
pub fn as_version_4(current: &[u8]) -> Vec<u8> {
    let current = as_version_5(current);
    let body_end = current.len() - 4;
    let auth_at = body_end - EMPTY_AUTH_SECTION;
    let empty_auth = [&[0u8][..], &1u64.to_le_bytes(), &[0u8; 16]].concat();
    assert_eq!(&current[auth_at..body_end], &empty_auth[..], "auth section is empty");
    let mut v4 = current[..auth_at].to_vec();
    v4[8] = 4;
    let crc = crc32c::crc32c(&v4);
    v4.extend_from_slice(&crc.to_le_bytes());
    v4
}

pub fn snapshot_bytes(sm: &StateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    let n = sm.snapshot_view().write_to(&mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}
