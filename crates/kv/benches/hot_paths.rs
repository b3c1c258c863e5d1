//! Hot paths of a put on every member, timed without a harness dependency:
//! `cargo bench -p kv --bench hot_paths [-- NAME]`.
//!
//! - `apply_put`: `StateMachine::apply` of encoded puts of 256-byte values over
//!   20,000 keys, with a view published every 32 entries (as the applier does after
//!   each batch, so the persistent maps copy the paths they write, as in production).
//! - `encode_put` / `decode_put`: a put command to and from its log bytes.
//!
//! Prints nanoseconds per operation (best of 5 rounds). Wall time on a shared machine
//! is noisy: for a before/after comparison count instructions instead, e.g.
//! `valgrind --tool=callgrind --toplevel-collect=no --toggle-collect='*apply_round*'
//! target/release/deps/hot_paths-* apply_put`. Nothing here asserts a speed.

use std::hint::black_box;
use std::time::Instant;

use kv::{Command, Config, Op, PutRequest, StateMachine};

/// Distinct keys written (the compare script's quick runs use 10-100k).
const KEYS: u64 = 20_000;
/// Entries between two published views (a typical group-commit batch at 64 clients).
const BATCH: u64 = 32;
/// Entries applied per round.
const ROUND: u64 = 20_000;
/// Rounds timed; the best is reported.
const ROUNDS: usize = 5;

fn put(i: u64) -> Vec<u8> {
    // A cheap mix so the keys are spread over the map as random keys are.
    let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS;
    Command::new(Op::Put(PutRequest {
        key: format!("key-{k:08}").into_bytes(),
        value: vec![b'v'; 256],
        ..PutRequest::default()
    }))
    .encode()
}

/// Applies `log` after entry `next`, publishing a view every [`BATCH`] entries.
#[inline(never)]
fn apply_round(
    sm: &mut StateMachine,
    view: &mut Option<StateMachine>,
    next: &mut u64,
    log: &[Vec<u8>],
) {
    for entry in log {
        *next += 1;
        black_box(sm.apply(*next, entry));
        if next.is_multiple_of(BATCH) {
            // Publish a view, dropping the one before, as the applier does.
            *view = Some(sm.clone());
        }
    }
}

fn apply_put() -> f64 {
    let mut sm = StateMachine::new(Config::default());
    let mut view = None;
    let mut next = 0;
    let warm: Vec<Vec<u8>> = (0..KEYS).map(put).collect();
    apply_round(&mut sm, &mut view, &mut next, &warm);
    best_ns(ROUND, |round| {
        let log: Vec<Vec<u8>> = (0..ROUND).map(|i| put(round * ROUND + i)).collect();
        let t = Instant::now();
        apply_round(&mut sm, &mut view, &mut next, &log);
        t.elapsed().as_nanos() as f64
    })
}

fn encode_put() -> f64 {
    let cmd = Command::decode(&put(7)).expect("a put decodes");
    best_ns(ROUND, |_| {
        let t = Instant::now();
        for _ in 0..ROUND {
            black_box(black_box(&cmd).encode());
        }
        t.elapsed().as_nanos() as f64
    })
}

fn decode_put() -> f64 {
    let bytes = put(7);
    best_ns(ROUND, |_| {
        let t = Instant::now();
        for _ in 0..ROUND {
            black_box(Command::decode(black_box(&bytes)).expect("a put decodes"));
        }
        t.elapsed().as_nanos() as f64
    })
}

/// A named case: what it prints, and its ns per operation.
type Case = (&'static str, fn() -> f64);

/// The best of [`ROUNDS`] rounds of `ops` operations, in ns per operation.
fn best_ns(ops: u64, mut round: impl FnMut(u64) -> f64) -> f64 {
    (0..ROUNDS as u64).map(|r| round(r + 1) / ops as f64).fold(f64::INFINITY, f64::min)
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cases: [Case; 3] =
        [("apply_put", apply_put), ("encode_put", encode_put), ("decode_put", decode_put)];
    for (name, case) in cases {
        if filter.as_deref().is_none_or(|f| name.contains(f)) {
            println!("{name:<12} {:>10.0} ns/op", case());
        }
    }
}
