//! The peer frame path, timed without a harness dependency:
//! `cargo bench -p proto --bench peer_frame`.
//!
//! One frame is what a leader sends a follower for one Ready under load: an append of
//! 32 entries of ~300 bytes (a put of a 256-byte value as the log stores it). The path
//! is the core's messages to the wire batch (`MessageBatch::from_raft`), protobuf encode,
//! decode, and back to the core's messages (`into_raft`), as the peer stream does.
//! Prints nanoseconds per frame (best of 5 rounds); for before/after on a shared
//! machine count instructions (`valgrind --tool=callgrind`). Nothing asserts a speed.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use proto::peer::MessageBatch;
use raft::{Entry, EntryKind, Message, MessageBody};

/// Entries in one append (a group-commit batch at 64 clients).
const ENTRIES: u64 = 32;
/// Bytes of each entry's command.
const ENTRY_BYTES: usize = 300;
/// Frames per round, and rounds timed (the best is reported).
const FRAMES: u64 = 5_000;
const ROUNDS: usize = 5;

fn append() -> Message {
    let data: Arc<[u8]> = vec![7u8; ENTRY_BYTES].into();
    let entries = (0..ENTRIES)
        .map(|k| Entry { term: 3, index: 1000 + k, kind: EntryKind::Normal, data: data.clone() })
        .collect();
    Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append { prev_index: 999, prev_term: 3, entries, commit: 990 },
    }
}

fn main() {
    let messages = vec![append()];
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..FRAMES {
            let wire = MessageBatch::from_raft(42, black_box(&messages)).encode_to_vec();
            bytes = wire.len();
            let back = MessageBatch::decode(black_box(&wire[..])).expect("a frame decodes");
            black_box(back.into_raft().expect("a frame converts"));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / FRAMES as f64);
    }
    println!("peer_frame  {best:>10.0} ns/frame ({ENTRIES} entries, {bytes} bytes)");
}
