//! How long the node thread (the raft loop: ticks, heartbeats, appends, fsyncs) is held
//! while the largest accepted requests are applied, now that apply runs on its own
//! thread (issue 11). A one-member cluster on the real runtime over an in-memory store:
//! it loads `KEYS` keys, then for each case resets the longest-batch gauges, runs the
//! request and prints the longest node loop batch and the longest apply.
//!
//! Cases: a delete range over every key, a lease revoke whose lease holds every key,
//! and the largest transaction accepted (nested deletes and puts filling 1.5 MiB).
//!
//! ```text
//! cargo run --release -p server --example apply_hold [KEYS]   # default 1000000
//! ```
//! The goal: the node loop never held more than 50 ms by apply.

use kv::{Command, DeleteRangeRequest, Op, PutRequest, RequestOp, Response, TxnRequest};
use node::{MemStore, Node, NodeConfig, Request};
use proto::etcdserverpb as pb;
use server::metrics::Metrics;
use server::runtime::{self, NodeHandle, Outbox};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A one-member cluster has no peers.
struct NoPeers;
impl Outbox for NoPeers {
    fn send(&self, _msgs: Vec<raft::Message>) {}
}

/// etcd's `--max-request-bytes` default: the largest request a client can send.
const REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// The Raft core's limit on one proposal (`raft::Config::max_proposal_bytes`).
const PROPOSAL_BYTES_MAX: usize = 2 << 20;
/// Puts per loading transaction, and the fan-out of the largest transaction's tree.
const FANOUT: usize = 31;

fn key(prefix: u8, i: usize) -> Vec<u8> {
    vec![prefix, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn put(key: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp::Put(PutRequest { key, value: b"v".to_vec(), lease, ..Default::default() })
}

fn txn(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { success, ..Default::default() }
}

/// `leaves` nested in 4 levels of transactions of at most [`FANOUT`] operations.
fn tree(leaves: Vec<pb::RequestOp>) -> pb::RequestOp {
    let mut ops = leaves;
    for _ in 0..4 {
        ops = ops
            .chunks(FANOUT)
            .map(|c| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                    success: c.to_vec(),
                    ..Default::default()
                })),
            })
            .collect();
    }
    ops.pop().expect("one root")
}

/// `n` deletes then `n` puts, as a client sends it: every put is checked against every
/// earlier delete (the shape of the hostile suite's largest transaction).
fn delete_put(n: usize) -> pb::TxnRequest {
    use pb::request_op::Request as R;
    let op = |r| pb::RequestOp { request: Some(r) };
    let deletes = (0..n)
        .map(|i| {
            op(R::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key(b'D', i).into(),
                ..Default::default()
            }))
        })
        .collect();
    let puts = (0..n)
        .map(|i| {
            op(R::RequestPut(pb::PutRequest { key: key(b'P', i).into(), ..Default::default() }))
        })
        .collect();
    pb::TxnRequest { success: vec![tree(deletes), tree(puts)], ..Default::default() }
}

/// Whether the server accepts `t`: at most [`REQUEST_BYTES_MAX`] on the wire and at
/// most [`PROPOSAL_BYTES_MAX`] in the log.
fn accepted(t: &pb::TxnRequest) -> Option<Command> {
    let cmd = Command::new(Op::Txn(server::etcd::txn_request(t).ok()?));
    let fits = prost::Message::encoded_len(t) <= REQUEST_BYTES_MAX
        && cmd.encode().len() <= PROPOSAL_BYTES_MAX;
    fits.then_some(cmd)
}

/// The largest [`delete_put`] the server accepts.
fn largest_txn() -> (usize, Command) {
    let (mut lo, mut hi) = (1usize, 1 << 18);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if accepted(&delete_put(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, accepted(&delete_put(lo)).expect("fits"))
}

async fn write(h: &NodeHandle, op: Op) -> Response {
    match h.request(Request::Write(Command::new(op))).await {
        Ok(Response::Error(e)) => panic!("refused: {e}"),
        Ok(r) => r,
        Err(e) => panic!("failed: {e}"),
    }
}

/// Loads `keys` keys under prefix `prefix` (attached to `lease`), 31 per transaction,
/// a few transactions at a time.
async fn load(h: &NodeHandle, prefix: u8, keys: usize, lease: i64) {
    let chunks: Vec<Vec<usize>> =
        (0..keys).collect::<Vec<_>>().chunks(FANOUT).map(|c| c.to_vec()).collect();
    for group in chunks.chunks(64) {
        let mut tasks = Vec::new();
        for c in group {
            let h = h.clone();
            let ops = c.iter().map(|&i| put(key(prefix, i), lease)).collect();
            tasks.push(tokio::spawn(async move { write(&h, Op::Txn(txn(ops))).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

/// Runs one case: resets the gauges, runs `op`, prints what held what.
async fn case(h: &NodeHandle, metrics: &Metrics, name: &str, op: Op) {
    metrics.node_loop_longest_micros.store(0, Ordering::Relaxed);
    metrics.apply_longest_micros.store(0, Ordering::Relaxed);
    let started = Instant::now();
    write(h, op).await;
    let took = started.elapsed();
    let node_ms = metrics.node_loop_longest_micros.load(Ordering::Relaxed) as f64 / 1e3;
    let apply_ms = metrics.apply_longest_micros.load(Ordering::Relaxed) as f64 / 1e3;
    println!(
        "{name:<44} request {:>8.1} ms   apply {apply_ms:>8.1} ms   node loop held at most {node_ms:>6.1} ms",
        took.as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keys: usize = std::env::args().nth(1).map_or(1_000_000, |a| a.parse().expect("KEYS"));
    let store = MemStore::default();
    let restored = store.recover();
    let mut cfg = NodeConfig::new(1, [1].into());
    cfg.hand_out_reads = true;
    cfg.apply_apart = true;
    cfg.background_snapshots = true;
    cfg.snapshot_interval_entries = 0;
    cfg.request_timeout_ticks = 6_000; // 60 s: the largest applies take seconds
    let node = Node::new(cfg, store, restored).expect("a new member starts");
    let metrics = Arc::new(Metrics::default());
    let dir = std::env::temp_dir().join(format!("raftkv-apply-hold-{}", std::process::id()));
    let (h, join) =
        runtime::spawn(node, Duration::from_millis(10), NoPeers, metrics.clone(), dir, |e| {
            panic!("{e}")
        });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.status().await.is_some_and(|s| s.is_leader) {
        assert!(Instant::now() < deadline, "a one-member cluster elects itself");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let keys = keys.min(1 << 24);
    println!("apply_hold: {keys} keys per case, one member, in-memory store");
    load(&h, b'a', keys, 0).await;
    let all_a = DeleteRangeRequest { key: vec![b'a'], range_end: vec![b'b'], prev_kv: false };
    case(&h, &metrics, &format!("delete range over {keys} keys"), Op::DeleteRange(all_a)).await;

    let Response::LeaseGranted(g) = write(&h, Op::LeaseGrant { id: 0, ttl_secs: 3600 }).await
    else {
        panic!("grant")
    };
    load(&h, b'l', keys, g.id).await;
    case(&h, &metrics, &format!("lease revoke with {keys} keys"), Op::LeaseRevoke { id: g.id })
        .await;

    let (n, txn) = largest_txn();
    let name = format!("largest txn: {n} deletes + {n} puts ({} KiB)", txn.encode().len() / 1024);
    for _ in 0..3 {
        case(&h, &metrics, &name, txn.op.clone()).await;
    }
    // What the caller's task does per write (off the node thread since writes reach it
    // encoded, `Request::encoded`): encode it for the log, drop it.
    let copy = txn.clone();
    let started = Instant::now();
    let encoded = copy.encode();
    drop(copy);
    println!(
        "{:<44} encoding it ({} KiB) and dropping it (caller's task) take {:.1} ms",
        "",
        encoded.len() / 1024,
        started.elapsed().as_secs_f64() * 1e3
    );
    h.stop();
    join.join().expect("the node thread ends");
}
