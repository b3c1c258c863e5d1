//! What handing writes to the node thread costs, one at a time versus as one batch (the
//! path a leader takes for forwarded writes since `ForwardBatch`).
//!
//! Method: a one-member node thread over an in-memory log (no fsync, so the hand-off and
//! the node loop dominate). For each mode, W writes (default 20,000) in waves of 64:
//! either 64 tasks each calling `NodeHandle::request` once (one input each, as one
//! `Forward` call per write was served), or one `NodeHandle::writes` with the 64 (one
//! input). Prints wall time and process CPU time (utime + stime from /proc/self/stat)
//! per write. Numbers on a shared 2-core machine are noisy: run it a few times.
//!
//! `cargo run --release -p server --example write_handoff [-- WRITES]`

use kv::{Command, Op, PutRequest};
use node::{MemStore, Node, NodeConfig, Request};
use server::metrics::Metrics;
use server::runtime::{self, NodeHandle, Outbox};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct NoPeers;
impl Outbox for NoPeers {
    fn send(&self, _msgs: Vec<raft::Message>) {}
}

const WAVE: u64 = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let writes: u64 = match std::env::args().nth(1) {
        None => 20_000,
        Some(a) => a.parse().unwrap_or_else(|_| panic!("WRITES must be a number, got {a:?}")),
    };
    for batched in [false, true] {
        let (node, join) = start().await;
        let (cpu0, wall) = (cpu_seconds(), Instant::now());
        for wave in 0..writes.div_ceil(WAVE) {
            let cmds: Vec<Command> = (0..WAVE).map(|i| put(wave * WAVE + i)).collect();
            if batched {
                let replies = node.writes(cmds).await;
                assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
            } else {
                let tasks: Vec<_> = cmds
                    .into_iter()
                    .map(|cmd| {
                        let node = node.clone();
                        tokio::spawn(async move { node.request(Request::Write(cmd)).await })
                    })
                    .collect();
                for t in tasks {
                    assert!(t.await.expect("task").is_ok());
                }
            }
        }
        let (cpu, wall) = (cpu_seconds() - cpu0, wall.elapsed().as_secs_f64());
        let mode = if batched { "one input per 64 (writes)" } else { "one input per write" };
        println!(
            "{mode:<28} {writes} writes: wall {:.1} us/write, CPU {:.1} us/write",
            wall * 1e6 / writes as f64,
            cpu * 1e6 / writes as f64
        );
        node.stop();
        join.join().expect("node thread");
    }
}

fn put(i: u64) -> Command {
    let key = format!("key/{i:08}").into_bytes();
    Command::new(Op::Put(PutRequest { key, value: vec![7; 256], ..Default::default() }))
}

/// This process's CPU seconds (user + system) so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux)");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

async fn start() -> (NodeHandle, std::thread::JoinHandle<()>) {
    let store = MemStore::default();
    let restored = store.recover();
    let mut cfg = NodeConfig::new(1, [1].into());
    cfg.hand_out_reads = true;
    cfg.snapshot_interval_entries = 0;
    cfg.request_timeout_ticks = 10_000;
    cfg.apply_apart = true; // the runtime applies on its own thread
    let node = Node::new(cfg, store, restored).expect("node");
    let metrics = Arc::new(Metrics::default());
    let dir = std::env::temp_dir().join(format!("raftkv-write-handoff-{}", std::process::id()));
    let tick = Duration::from_millis(10);
    let on_fatal = |e: String| panic!("node failed: {e}");
    let (handle, join) = runtime::spawn(node, tick, NoPeers, metrics, dir, on_fatal);
    while !handle.status().await.is_some_and(|s| s.is_leader) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (handle, join)
}
