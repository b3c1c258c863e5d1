//! Hot paths of a put on every member, timed without a harness dependency:
//! `cargo bench -p kv --bench hot_paths [-- NAME]`.
//!
//! - `apply_put`: `StateMachine::apply` of encoded puts of 256-byte values over
//!   20,000 keys, with a view published every 32 entries (as the applier does after
//!   each batch, so the persistent maps copy the paths they write, as in production).
//! - `encode_put` / `decode_put`: a put command to and from its log bytes.
//! - `largest_txn`, `largest_put`, `delete_range_all` (issue 11: the worst apply time
//!   of the largest requests the server accepts), each applied to a state of
//!   [`BIG_KEYS`] live keys written in random order, from a fresh O(1) copy of it
//!   (so every write copies the tree paths it touches, as while a view is
//!   published): the largest transaction (nested deletes of existing keys, then
//!   nested puts over other existing keys, both spread over the whole key space,
//!   filling the 2 MiB proposal limit: the shape of the hostile suite's), the
//!   largest put (a value at the 1.5 MiB limit), a delete range over every key.
//!   Each prints the CPU time of one apply (best and worst of its rounds, decode
//!   included; the thread's schedstat, which waits for a CPU do not inflate).
//!
//! Prints nanoseconds per operation (best of 5 rounds). Wall time on a shared machine
//! is noisy: for a before/after comparison count instructions instead, e.g.
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*apply_round*'
//! target/release/deps/hot_paths-* apply_put` (for the large cases
//! `--toggle-collect='*apply_once*'` with `HOT_PATHS_KEYS=120000 HOT_PATHS_ROUNDS=1`:
//! the largest transaction needs twice its operations in keys). Nothing here asserts a speed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kv::{
    Command, Config, DeleteRangeRequest, Op, PutRequest, RequestOp, StateMachine, TxnRequest,
};

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

/// Live keys of the state the largest requests are applied to (`HOT_PATHS_KEYS` sets
/// another count, e.g. a smaller one for a run under callgrind).
const BIG_KEYS: u32 = 1_000_000;
/// The Raft core's limit on one proposal (`raft::Config::max_proposal_bytes`); with
/// 4-byte keys it binds before the 1.5 MiB request limit (the server example
/// `apply_hold` checks both).
const PROPOSAL_BYTES_MAX: usize = 2 << 20;
/// Operations per nested transaction in the largest one (at most 128 as etcd's
/// `--max-txn-ops`; 31 as the server example, so 4 levels hold 900k leaves).
const FANOUT: usize = 31;
/// Applies timed per large case (each from a fresh copy of the loaded state;
/// `HOT_PATHS_ROUNDS` sets another count).
const BIG_ROUNDS: usize = 3;

/// [`BIG_KEYS`], or `HOT_PATHS_KEYS` if set.
fn big_keys() -> u32 {
    std::env::var("HOT_PATHS_KEYS")
        .map_or(BIG_KEYS, |n| n.parse().expect("HOT_PATHS_KEYS: a count"))
}

/// The `i`-th key of the big state: 4 bytes, as the server example's.
fn big_key(i: u32) -> Vec<u8> {
    let mut k = i.to_be_bytes();
    k[0] = b'k';
    k.to_vec()
}

/// [`BIG_KEYS`] keys, written 128 per transaction in a scrambled order (a B-tree built
/// by appends in key order would be unrealistically tidy).
fn big_state(keys: u32) -> (StateMachine, u64) {
    assert!(!keys.is_multiple_of(7919), "7919 must not divide the key count");
    let mut sm = StateMachine::new(Config::default());
    let mut index = 0;
    // 7919 is prime and does not divide `keys`, so this visits every key once.
    let order: Vec<u32> = (0..keys).map(|i| (i as u64 * 7919 % keys as u64) as u32).collect();
    for chunk in order.chunks(128) {
        let success = chunk
            .iter()
            .map(|&i| {
                RequestOp::Put(PutRequest {
                    key: big_key(i),
                    value: vec![b'v'; 16],
                    ..PutRequest::default()
                })
            })
            .collect();
        index += 1;
        let txn = Command::new(Op::Txn(TxnRequest { success, ..TxnRequest::default() }));
        assert!(!matches!(sm.apply(index, &txn.encode()), kv::Response::Error(_)));
    }
    (sm, index)
}

/// `ops` nested in levels of transactions of at most [`FANOUT`] operations, down to one.
fn nest(mut ops: Vec<RequestOp>) -> RequestOp {
    while ops.len() > 1 {
        ops = ops
            .chunks(FANOUT)
            .map(|c| RequestOp::Txn(TxnRequest { success: c.to_vec(), ..TxnRequest::default() }))
            .collect();
    }
    ops.pop().expect("at least one operation")
}

/// `n` deletes of existing keys, then `n` puts over other existing keys, both spread
/// evenly over the key space; each half nested 4 levels deep.
fn delete_put(keys: u32, n: u32) -> Command {
    let stride = keys / n;
    assert!(stride >= 2, "{keys} keys hold no {n} deletes and {n} other puts");
    let deletes = (0..n)
        .map(|j| {
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: big_key(j * stride),
                ..DeleteRangeRequest::default()
            })
        })
        .collect();
    let puts = (0..n)
        .map(|j| {
            RequestOp::Put(PutRequest {
                key: big_key(j * stride + 1),
                value: Vec::new(),
                ..PutRequest::default()
            })
        })
        .collect();
    Command::new(Op::Txn(TxnRequest {
        success: vec![nest(deletes), nest(puts)],
        ..TxnRequest::default()
    }))
}

/// The largest [`delete_put`] within [`PROPOSAL_BYTES_MAX`].
fn largest_delete_put(keys: u32) -> (u32, Vec<u8>) {
    let (mut lo, mut hi) = (1u32, keys / 2 + 1);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if delete_put(keys, mid).encode().len() <= PROPOSAL_BYTES_MAX {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, delete_put(keys, lo).encode())
}

/// Time this thread has spent on a CPU (Linux's schedstat, in ns; zero elsewhere): on
/// a shared machine wall time also counts the waits for a CPU.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// One apply, a function of its own for callgrind's `--toggle-collect`.
#[inline(never)]
fn apply_once(sm: &mut StateMachine, index: u64, entry: &[u8]) -> kv::Response {
    black_box(sm.apply(index, entry))
}

/// Applies `entry` to fresh copies of `base` [`BIG_ROUNDS`] times; prints the best and
/// worst apply in CPU ms, the worst in wall ms, the CPU time of dropping the copy
/// afterwards (the applier drops the view it replaced on its thread too) and what the
/// apply answered.
fn big_case(name: &str, base: &(StateMachine, u64), entry: &[u8]) {
    let (mut best, mut worst, mut worst_wall, mut worst_drop) = (f64::INFINITY, 0f64, 0f64, 0f64);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut answer = String::new();
    let rounds = std::env::var("HOT_PATHS_ROUNDS")
        .map_or(BIG_ROUNDS, |n| n.parse().expect("HOT_PATHS_ROUNDS: a count"));
    for _ in 0..rounds {
        let mut sm = base.0.clone();
        let (wall, cpu) = (Instant::now(), cpu_time());
        let response = apply_once(&mut sm, base.1 + 1, entry);
        let (wall, cpu) = (ms(wall.elapsed()), ms(cpu_time() - cpu));
        (best, worst, worst_wall) = (best.min(cpu), worst.max(cpu), worst_wall.max(wall));
        answer = match response {
            kv::Response::Error(e) => format!("error: {e}"),
            _ => format!("revision {}", sm.revision()),
        };
        let dropped = cpu_time();
        drop(sm);
        worst_drop = worst_drop.max(ms(cpu_time() - dropped));
    }
    println!(
        "{name:<16} {best:>8.1} ms best {worst:>8.1} ms worst CPU ({worst_wall:.1} ms wall), \
         drop {worst_drop:.1} ms ({answer})"
    );
}

fn big_cases(filter: Option<&str>) {
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    if !["largest_txn", "largest_put", "delete_range_all"].iter().any(|n| wanted(n)) {
        return;
    }
    let t = Instant::now();
    let keys = big_keys();
    let base = big_state(keys);
    println!("# {keys} keys loaded in {:.1} s", t.elapsed().as_secs_f64());
    if wanted("largest_txn") {
        let (n, entry) = largest_delete_put(keys);
        println!("# largest txn: {n} deletes + {n} puts, {} KiB", entry.len() / 1024);
        big_case("largest_txn", &base, &entry);
    }
    if wanted("largest_put") {
        let value_len = Config::default().value_bytes_max as usize;
        let entry = Command::new(Op::Put(PutRequest {
            key: big_key(keys / 2),
            value: vec![b'v'; value_len],
            ..PutRequest::default()
        }))
        .encode();
        big_case("largest_put", &base, &entry);
    }
    if wanted("delete_range_all") {
        let entry = Command::new(Op::DeleteRange(DeleteRangeRequest {
            key: vec![b'k'],
            range_end: vec![b'l'],
            prev_kv: false,
        }))
        .encode();
        big_case("delete_range_all", &base, &entry);
    }
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
    big_cases(filter.as_deref());
}
