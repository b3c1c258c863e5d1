//! Measures how much a snapshot pauses apply.
//!
//! Loads 1 million keys (16-byte keys, 100-byte values), then applies puts
//! to random existing keys and records the latency of each `apply`: first
//! with no snapshot, then while a background thread streams a snapshot view
//! (once into a `Vec`, once into a sink). For contrast it runs the naive
//! design — a std `BTreeMap` deep-cloned inside the apply loop, so the clone
//! is the pause — on the same data.
//!
//! The machine is shared, so the OS sometimes takes the CPU from the apply
//! thread for milliseconds. Each apply slower than [`SLOW`] is checked
//! against the thread's involuntary context-switch count; the report gives
//! the longest pause overall and the longest one with no preemption, which
//! is the state machine's own.
//!
//! Run: `cargo run --release -p kv --example snapshot_pause`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::{Command, Config, Op, PutRequest, StateMachine};

const KEYS: u64 = 1_000_000;
const VALUE_BYTES: usize = 100;
const BASELINE_APPLIES: usize = 300_000;
/// Applies slower than this are checked for preemption.
const SLOW: Duration = Duration::from_micros(100);

/// splitmix64, so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// 16-byte key.
fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

fn put_entry(i: u64, salt: u64) -> Vec<u8> {
    Command::new(Op::Put(PutRequest { key: key(i), value: value(i ^ salt), ..Default::default() }))
        .encode()
}

/// Times the OS took the CPU from this thread (Linux; 0 elsewhere).
fn preemptions() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Latencies {
    all: Vec<Duration>,
    /// Longest apply during which the thread was not preempted.
    max_unpreempted: Duration,
    /// Applies slower than [`SLOW`] that were preempted.
    slow_preempted: usize,
    switches_seen: u64,
}

impl Latencies {
    fn start() -> Self {
        Latencies {
            all: Vec::with_capacity(1 << 20),
            switches_seen: preemptions(),
            ..Default::default()
        }
    }

    fn record(&mut self, elapsed: Duration) {
        self.all.push(elapsed);
        let mut preempted = false;
        if elapsed >= SLOW {
            // Read only after slow applies so the probe does not perturb.
            let now = preemptions();
            preempted = now > self.switches_seen;
            self.switches_seen = now;
        }
        if preempted {
            self.slow_preempted += 1;
        } else {
            self.max_unpreempted = self.max_unpreempted.max(elapsed);
        }
    }

    fn report(mut self, name: &str) -> Duration {
        self.all.sort();
        let n = self.all.len();
        let at = |q: f64| self.all[((n as f64 * q) as usize).min(n - 1)];
        println!(
            "apply {name}: n={n} p50={:.2?} p99={:.2?} p99.9={:.2?} max={:.2?}; \
             max not preempted={:.2?} (slow applies preempted by the OS: {})",
            at(0.50),
            at(0.99),
            at(0.999),
            self.all[n - 1],
            self.max_unpreempted,
            self.slow_preempted
        );
        self.max_unpreempted
    }
}

struct Applier {
    sm: StateMachine,
    index: u64,
    rng: Rng,
}

impl Applier {
    /// One put to a random existing key; returns the apply latency (the
    /// entry is encoded outside the timed part, as the log hands over bytes).
    fn apply_one(&mut self) -> Duration {
        let entry = put_entry(self.rng.next() % KEYS, self.index);
        self.index += 1;
        let start = Instant::now();
        let response = self.sm.apply(self.index, &entry);
        let elapsed = start.elapsed();
        assert!(response.error().is_none(), "{response:?}");
        elapsed
    }
}

struct SnapshotRun {
    bytes: u64,
    view_time: Duration,
    serialize_time: Duration,
    latencies: Latencies,
}

/// Takes a view, streams it on another thread and keeps applying on this one
/// until the stream ends.
fn snapshot_phase(a: &mut Applier, to_memory: bool) -> SnapshotRun {
    let view_start = Instant::now();
    let view = a.sm.snapshot_view();
    let view_time = view_start.elapsed();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut out = Vec::new();
            let bytes = if to_memory {
                view.write_to(&mut out).expect("writing to memory")
            } else {
                view.write_to(&mut std::io::sink()).expect("writing to a sink")
            };
            let elapsed = start.elapsed();
            // Releasing the view (the nodes apply has copied away from) is
            // part of the snapshot's cost, so it happens while apply runs.
            drop(view);
            done.store(true, Ordering::Release);
            // Hand the buffer back instead of freeing it here: unmapping
            // 200 MiB holds the process's address-space lock for tens of
            // milliseconds, which stalls the applying thread's allocator
            // (measured). A real driver streams to a file and never holds
            // the snapshot in memory.
            (bytes, elapsed, out)
        })
    };
    let mut latencies = Latencies::start();
    while !done.load(Ordering::Acquire) {
        latencies.record(a.apply_one());
    }
    let (bytes, serialize_time, out) = writer.join().expect("snapshot thread");
    assert!(!to_memory || bytes == out.len() as u64);
    drop(out);
    SnapshotRun { bytes, view_time, serialize_time, latencies }
}

/// The stall of a naive design: a `BTreeMap<Vec<u8>, Vec<u8>>` state whose
/// snapshot is a deep clone taken inside the apply loop.
fn naive_clone_pause() -> Duration {
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = (0..KEYS).map(|i| (key(i), value(i))).collect();
    let mut rng = Rng(0xbad);
    let start = Instant::now();
    map.insert(key(rng.next() % KEYS), value(1));
    let frozen = map.clone();
    let pause = start.elapsed();
    // Serializing and dropping the copy would happen on another thread.
    std::thread::spawn(move || drop(std::hint::black_box(frozen)));
    pause
}

fn main() {
    let mut a = Applier { sm: StateMachine::new(Config::default()), index: 0, rng: Rng(0x5eed) };
    let load_start = Instant::now();
    for i in 0..KEYS {
        a.index += 1;
        a.sm.apply(a.index, &put_entry(i, 0));
    }
    println!(
        "keys loaded:                  {KEYS} (16-byte keys, {VALUE_BYTES}-byte values) in {:.2?}",
        load_start.elapsed()
    );

    let mut base = Latencies::start();
    for _ in 0..BASELINE_APPLIES {
        base.record(a.apply_one());
    }
    let to_memory = snapshot_phase(&mut a, true);
    let to_sink = snapshot_phase(&mut a, false);

    println!(
        "snapshot size:                {} bytes ({:.1} MiB)",
        to_memory.bytes,
        to_memory.bytes as f64 / (1 << 20) as f64
    );
    println!(
        "take snapshot view:           {:.2?} (Vec run), {:.2?} (sink run)",
        to_memory.view_time, to_sink.view_time
    );
    println!("serialize snapshot to Vec:    {:.2?} (background thread)", to_memory.serialize_time);
    println!("serialize snapshot to sink:   {:.2?} (background thread)", to_sink.serialize_time);
    base.report("without snapshot       ");
    let pause_vec = to_memory.latencies.report("during snapshot to Vec ");
    let pause_sink = to_sink.latencies.report("during snapshot to sink");

    drop(a);
    let naive = naive_clone_pause();
    let cow = pause_vec.max(pause_sink).max(to_memory.view_time).max(to_sink.view_time);
    println!("naive BTreeMap clone pause:   {naive:.2?} (one apply blocked for the whole clone)");
    println!(
        "longest apply pause not preempted, naive clone / copy-on-write view: {:.0}x ({naive:.2?} vs {cow:.2?})",
        naive.as_secs_f64() / cow.as_secs_f64()
    );
}
