//! Random and mutated bytes into the peer decoders, and whatever decodes into a live
//! core (issue 10: no panic reachable from peer bytes).
//!
//! Seeded and stable-Rust only (the core's own SplitMix64, no fuzzing engine): each
//! case is random bytes or a valid encoding with bytes flipped, inserted, truncated or
//! with a varint field set to an extreme. The decoders must return a value or an error;
//! what converts is checked by `raft::validate` and stepped into a member of a
//! three-voter core, which must not panic either.

use prost::Message as _;
use proto::peer as pb;
use raft::{ConfState, Config, Entry, EntryKind, Message, MessageBody, Raft, Rng, SnapshotMeta};
use std::sync::Arc;

/// Encodings of one message of each kind, the seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let e = |index| Entry { term: 3, index, kind: EntryKind::Normal, data: Arc::from(&b"v"[..]) };
    let meta = SnapshotMeta { index: 9, term: 3, conf: ConfState::from_voters([1, 2, 3].into()) };
    let bodies = vec![
        MessageBody::PreVote { last_index: 9, last_term: 3 },
        MessageBody::Vote { last_index: 9, last_term: 3, transfer: false },
        MessageBody::VoteResp { reject: false },
        MessageBody::Append { prev_index: 4, prev_term: 3, entries: vec![e(5), e(6)], commit: 5 },
        MessageBody::AppendResp { index: 6, reject: None },
        MessageBody::Heartbeat { commit: 5, read_round: 2 },
        MessageBody::HeartbeatResp { read_round: 2 },
        MessageBody::Snapshot {
            meta,
            offset: 0,
            total_bytes: 4,
            chunk: Arc::from(&b"snap"[..]),
            done: true,
        },
        MessageBody::SnapshotResp { snapshot_index: 9, next_offset: 4, done: true, last_index: 9 },
        MessageBody::ReadIndex { ctx: 7 },
        MessageBody::ReadIndexResp { ctx: 7, index: 5 },
        MessageBody::TimeoutNow,
    ];
    let msgs: Vec<Message> =
        bodies.into_iter().map(|body| Message { from: 2, to: 1, term: 3, body }).collect();
    let mut out: Vec<Vec<u8>> = msgs.iter().map(|m| pb::Message::from(m).encode_to_vec()).collect();
    out.push(pb::MessageBatch::from_raft(1, &msgs).encode_to_vec());
    out
}

/// A varint of an extreme value, for splicing into an encoding.
fn extreme_varint(rng: &mut Rng) -> Vec<u8> {
    let v = [u64::MAX, 1 << 62, (1 << 62) + 1, 0, u64::MAX - 1][rng.range(0, 5) as usize];
    let mut buf = Vec::new();
    prost::encoding::encode_varint(v, &mut buf);
    buf
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.range(1, 5) {
        let at = rng.range(0, b.len() as u64 + 1) as usize;
        match rng.range(0, 5) {
            0 if at < b.len() => b[at] ^= 1 << rng.range(0, 8),
            1 => b.insert(at, rng.next_u64() as u8),
            2 => b.truncate(at),
            3 => {
                let v = extreme_varint(rng);
                b.splice(at..at, v);
            }
            _ if at < b.len() => b[at] = rng.next_u64() as u8,
            _ => {}
        }
    }
    b
}

/// A seed message whose sender, recipient or term is set to an extreme value.
fn extreme_header(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.range(0, seeds.len() as u64 - 1) as usize];
    let mut m = pb::Message::decode(&seed[..]).expect("seeds decode");
    let v = [u64::MAX, 1 << 62, (1 << 62) + 1, 0, 1, 2, 3][rng.range(0, 7) as usize];
    match rng.range(0, 3) {
        0 => m.from = v,
        1 => m.to = v,
        _ => m.term = v,
    }
    m.encode_to_vec()
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    (0..rng.range(0, 512)).map(|_| rng.next_u64() as u8).collect()
}

/// Decodes `bytes` every way a member does and steps whatever converts into `core`.
/// Returns how many messages reached the core.
fn feed(bytes: &[u8], core: &mut Raft) -> u64 {
    let limits = Config::new(1).peer_limits();
    let mut stepped = 0;
    let _ = pb::HelloRequest::decode(bytes);
    let _ = pb::ForwardRequest::decode(bytes);
    let mut wires = Vec::new();
    if let Ok(batch) = pb::MessageBatch::decode(bytes) {
        wires.extend(batch.messages);
    }
    if let Ok(m) = pb::Message::decode(bytes) {
        wires.push(m);
    }
    for wire in wires {
        if let Ok(m) = Message::try_from(wire) {
            if raft::validate::check_message(&m, 1, &limits).is_ok() {
                stepped += 1;
            }
            // The core checks again; step everything that converts, valid or not.
            core.step(m);
            while core.has_ready() {
                let rd = core.ready();
                core.on_persisted(rd.number);
            }
        }
    }
    stepped
}

#[test]
fn random_and_mutated_peer_bytes_never_panic_the_decoders_or_a_core() {
    let seeds = seeds();
    let mut rng = Rng::new(0x5EED);
    let mut core = Raft::new(Config::new(1), &[1, 2, 3].into()).unwrap();
    let (mut cases, mut stepped) = (0u64, 0u64);
    for case in 0..200_000u64 {
        let bytes = if case % 4 == 0 {
            random_bytes(&mut rng)
        } else if case % 4 == 1 {
            extreme_header(&mut rng, &seeds)
        } else {
            let seed = &seeds[rng.range(0, seeds.len() as u64) as usize];
            mutate(&mut rng, seed)
        };
        stepped += feed(&bytes, &mut core);
        if case % 50 == 0 {
            core.tick();
        }
        cases += 1;
    }
    println!("{cases} inputs decoded, {stepped} valid messages stepped into the core");
    assert!(stepped > 10_000, "mutations reach the core often enough: {stepped}");
}
