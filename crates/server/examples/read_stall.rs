//! How long a huge read holds the node thread (the thread that also sends heartbeats).
//!
//! Loads N keys (default 1,000,000) into a one-member node thread, then runs a full
//! linearizable range, a full count_only range and a full serializable range while a
//! probe asks the node thread for its status every 10 ms. Prints, per read, how long
//! it took, the node thread's longest batch meanwhile, and the probe's slowest answer;
//! first with linearizable reads answered inline on the node thread (as before issue
//! 11), then handed out to read workers (as the server runs). Serializable reads never
//! reach the node thread, so they are measured in the second pass only.
//!
//! `cargo run --release -p server --example read_stall [-- KEYS]`

use kv::{Command, Op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use node::{MemStore, Node, NodeConfig, ReadQuery, Request};
use server::metrics::Metrics;
use server::runtime::{self, NodeHandle, Outbox};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct NoPeers;
impl Outbox for NoPeers {
    fn send(&self, _msgs: Vec<raft::Message>) {}
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keys: u64 = match std::env::args().nth(1) {
        None => 1_000_000,
        Some(a) => a.parse().unwrap_or_else(|_| panic!("KEYS must be a number, got {a:?}")),
    };
    for hand_out_reads in [false, true] {
        let mode = if hand_out_reads { "read workers" } else { "inline (before)" };
        println!("== {keys} keys, reads served {mode}");
        let (node, metrics, join) = start(hand_out_reads).await;
        load(&node, keys).await;
        let all = RangeRequest::all();
        let count = RangeRequest { count_only: true, ..RangeRequest::all() };
        for (name, range, serializable) in [
            ("full range, linearizable", all.clone(), false),
            ("count_only, linearizable", count, false),
            ("full range, serializable", all, true),
        ] {
            if serializable && !hand_out_reads {
                continue; // the handle never sends serializable reads to the node thread
            }
            let read = Request::Read { query: ReadQuery::Range(range), serializable };
            measure(&node, &metrics, name, read).await;
        }
        node.stop();
        join.join().expect("node thread");
    }
}

async fn start(hand_out_reads: bool) -> (NodeHandle, Arc<Metrics>, std::thread::JoinHandle<()>) {
    let store = MemStore::default();
    let restored = store.recover();
    let mut cfg = NodeConfig::new(1, [1].into());
    cfg.hand_out_reads = hand_out_reads;
    cfg.snapshot_interval_entries = 0;
    cfg.request_timeout_ticks = 10_000;
    cfg.apply_apart = true; // the runtime applies on its own thread
    let node = Node::new(cfg, store, restored).expect("node");
    let metrics = Arc::new(Metrics::default());
    let dir = std::env::temp_dir().join(format!("raftkv-read-stall-{}", std::process::id()));
    let tick = Duration::from_millis(10);
    let on_fatal = |e: String| panic!("node failed: {e}");
    let (handle, join) = runtime::spawn(node, tick, NoPeers, metrics.clone(), dir, on_fatal);
    while !handle.status().await.is_some_and(|s| s.is_leader) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (handle, metrics, join)
}

/// Puts `keys` keys, 128 to a transaction, 16 transactions in flight.
async fn load(node: &NodeHandle, keys: u64) {
    let started = Instant::now();
    let batches: Vec<u64> = (0..keys).step_by(128).collect();
    for wave in batches.chunks(16) {
        let mut tasks = Vec::new();
        for &first in wave {
            let node = node.clone();
            let success = (first..(first + 128).min(keys))
                .map(|i| {
                    let key = format!("key/{i:08}").into_bytes();
                    RequestOp::Put(PutRequest {
                        key,
                        value: b"value".to_vec(),
                        ..Default::default()
                    })
                })
                .collect();
            let txn = TxnRequest { success, ..Default::default() };
            let req = Request::Write(Command::new(Op::Txn(txn)));
            tasks.push(tokio::spawn(async move { node.request(req).await }));
        }
        for t in tasks {
            t.await.expect("task").expect("loading a batch of keys");
        }
    }
    println!("loaded in {:.1} s", started.elapsed().as_secs_f64());
}

/// Runs `read` while probing the node thread; prints the figures.
async fn measure(node: &NodeHandle, metrics: &Metrics, name: &str, read: Request) {
    metrics.node_loop_longest_micros.store(0, Ordering::Relaxed);
    let done = Arc::new(AtomicBool::new(false));
    let probe_max_micros = Arc::new(AtomicU64::new(0));
    let probe = {
        let (node, done, max) = (node.clone(), done.clone(), probe_max_micros.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let asked = Instant::now();
                node.status().await.expect("status");
                max.fetch_max(asked.elapsed().as_micros() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    let reply = node.request(read).await;
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    probe.await.expect("probe");
    let count = match reply {
        Ok(kv::Response::Range(r)) => r.count,
        other => panic!("{name}: {other:?}"),
    };
    println!(
        "{name:26} count {count:8}  read {:7.1} ms  node thread longest batch {:7.1} ms  status probe slowest {:7.1} ms",
        took.as_secs_f64() * 1e3,
        metrics.node_loop_longest_micros.load(Ordering::Relaxed) as f64 / 1e3,
        probe_max_micros.load(Ordering::Relaxed) as f64 / 1e3,
    );
}
