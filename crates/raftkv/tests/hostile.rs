//! The hostile-load suite (issue 11) on a real 3-member cluster: while a probe client
//! does a linearizable get every 50 ms against the leader, each case runs in turn —
//!
//! - (a) the largest transaction the server accepts (nested deletes and puts filling
//!   the request size, the shape whose duplicate-key check does the most work), many
//!   times;
//! - (b) ranges over many keys: serializable and linearizable, whole, `count_only` and
//!   with a `limit`; then (b2) one delete range over all of them (applied on the
//!   applier thread, it must not hold the raft loop);
//! - (c) many watchers from revision 1 on a hot key with a long history;
//! - (d) many leases granted, a share of them kept alive, then revoked;
//! - (e) many idle watch streams;
//! - (f) clients that never read their watch streams while writes flow;
//! - (g) writes until the space quota trips, then etcd's operator recovery (compact,
//!   defragment, alarm disarm), on a cluster of its own started with a small quota.
//!
//! For every case it records the probe's worst latency and errors, the elections (the
//! rise of the highest Raft term: any leader change raises it), the peak memory of
//! each member process (`VmHWM`, reset at the start of the case through
//! `/proc/PID/clear_refs`, and `VmRSS` sampled every 100 ms), and whether the cluster
//! serves normally afterwards (a put through every member, read back linearizably on
//! every member). The table is printed before anything is asserted.
//!
//! Sizes are scaled to keep the suite near 3 minutes on 2 cores; the scale is printed.
//! `RAFTKV_HOSTILE_FULL=1` runs the sizes of the issue (1M keys, 10k leases...).

mod common;

use common::{retry, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::watch_client::WatchClient;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Set to 1 to run the full sizes instead of the CI scale.
const FULL_ENV: &str = "RAFTKV_HOSTILE_FULL";
/// etcd's `--max-request-bytes` default, which raftkv enforces.
const REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// The Raft core's limit on one proposal (`raft::Config::max_proposal_bytes`).
const PROPOSAL_BYTES_MAX: usize = 2 << 20;
/// Operations per nesting level of the largest transaction: the top level holds 2 (the
/// deletes' tree and the puts' tree), and 4 levels of 31 below it use 126 of etcd's
/// 128 operations (a nested transaction gets what its parent leaves).
const TXN_FANOUT: usize = 31;
/// Nesting levels below the top one.
const TXN_LEVELS: u32 = 4;
/// The largest response the test's clients accept (a range over every key).
const RESPONSE_BYTES_MAX: usize = 512 << 20;
/// How often the probe reads.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// A probe read taking longer than this counts as an error.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The goal for the probe's worst latency.
const PROBE_GOAL: Duration = Duration::from_millis(500);
/// What is asserted: 2 cores shared with the load generator (and other work) make the
/// 500 ms goal unreliable in CI, so the table shows it and this looser bound holds.
const PROBE_ASSERTED: Duration = Duration::from_secs(2);
/// How long a cluster may take to serve again after a case before the suite gives up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one largest transaction may take (its apply holds every member today).
const LARGEST_TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound asserted on what (f)'s two slow streams cost their member: each holds at
/// most its queue (2 MiB), the response being written and one batch of events.
const SLOW_WATCH_GROWTH_MAX_MIB: i64 = 96;
/// The bound asserted on what 8 lagging streams cost their member (16 MiB of writes
/// meanwhile included): each holds at most its queue (2 MiB), the response being
/// written, and one batch of 1000 changes (4 MiB of 4 KiB values, and its responses).
const LAGGING_STREAMS_GROWTH_MAX_MIB: u64 = 160;
/// Streams opened per connection (below the HTTP/2 server's stream limit).
const STREAMS_PER_CONNECTION: usize = 100;

/// The sizes of one run.
#[derive(Debug)]
struct Scale {
    full: bool,
    /// (a) How many times the largest transaction is sent.
    txn_repeats: usize,
    /// (b) Keys loaded for the range case.
    range_keys: usize,
    /// (b) How many times each kind of range is asked.
    range_repeats: usize,
    /// (c) Watchers from revision 1 on the hot key.
    watchers: usize,
    /// (c) Changes of the hot key before they start.
    hot_key_history: usize,
    /// (d) Leases granted.
    leases: usize,
    /// (e) Idle watch streams.
    idle_streams: usize,
    /// (f) Bytes written while the slow watchers do not read.
    slow_watch_bytes: usize,
    /// (g) `--quota-backend-bytes` of the quota cluster.
    quota_bytes: usize,
}

impl Scale {
    fn pick() -> Scale {
        let full = std::env::var(FULL_ENV).is_ok_and(|v| v == "1");
        if full {
            Scale {
                full,
                txn_repeats: 20,
                range_keys: 1_000_000,
                range_repeats: 5,
                watchers: 1000,
                hot_key_history: 50_000,
                leases: 10_000,
                idle_streams: 5000,
                slow_watch_bytes: 1 << 30,
                quota_bytes: 256 << 20,
            }
        } else {
            Scale {
                full,
                txn_repeats: 3,
                range_keys: 200_000,
                range_repeats: 3,
                watchers: 1000,
                hot_key_history: 5000,
                leases: 10_000,
                idle_streams: 5000,
                slow_watch_bytes: 128 << 20,
                quota_bytes: 16 << 20,
            }
        }
    }
}

// ---- helpers ----

type CaseResult = Result<String, String>;

fn channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

fn kv_client(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch).max_decoding_message_size(RESPONSE_BYTES_MAX)
}

/// `f`, or an error naming `what` once `limit` has passed.
async fn within<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, f).await.map_err(|_| format!("{what}: not within {limit:?}"))
}

fn grpc<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, String> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| format!("{what}: {:?} {}", s.code(), s.message()))
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn delete_op(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn txn_op(success: Vec<pb::RequestOp>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
            success,
            ..Default::default()
        })),
    }
}

/// `leaves` nested in [`TXN_LEVELS`] levels of transactions of at most [`TXN_FANOUT`]
/// operations each.
fn tree(leaves: Vec<pb::RequestOp>) -> pb::RequestOp {
    assert!(leaves.len() <= TXN_FANOUT.pow(TXN_LEVELS), "too many leaves for the tree");
    let mut ops = leaves;
    for _ in 0..TXN_LEVELS - 1 {
        ops = ops.chunks(TXN_FANOUT).map(|c| txn_op(c.to_vec())).collect();
    }
    txn_op(ops)
}

/// A key of `prefix` and a 3-byte index: short keys fit the most operations.
fn short_key(prefix: u8, i: usize) -> Vec<u8> {
    vec![prefix, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// The largest-txn shape with `n` deletes and `n` puts: every put is checked against
/// every delete that comes before it, so the two halves are equal.
fn delete_put_txn(n: usize) -> pb::TxnRequest {
    let deletes = (0..n).map(|i| delete_op(short_key(b'D', i))).collect();
    let puts = (0..n).map(|i| put_op(short_key(b'P', i), Vec::new())).collect();
    pb::TxnRequest { success: vec![tree(deletes), tree(puts)], ..Default::default() }
}

/// Whether the server accepts `txn`: at most [`REQUEST_BYTES_MAX`] on the wire and at
/// most [`PROPOSAL_BYTES_MAX`] as the Raft log stores it (raftkv's encoding, with the
/// server's auth stamp).
fn accepted(txn: &pb::TxnRequest) -> bool {
    let Ok(kv_txn) = server::etcd::txn_request(txn) else { return false };
    // The server stamps every write with the auth revision it was checked under (and
    // the user, none here): count the largest stamp it can add.
    let mut command = kv::Command::new(kv::Op::Txn(kv_txn));
    command.auth = Some(kv::AuthStamp { user: String::new(), revision: u64::MAX });
    let logged = command.encode().len();
    prost::Message::encoded_len(txn) <= REQUEST_BYTES_MAX && logged <= PROPOSAL_BYTES_MAX
}

/// The largest `n` for which the server accepts [`delete_put_txn`].
fn largest_delete_put_txn() -> (usize, pb::TxnRequest) {
    let fits = |n: usize| accepted(&delete_put_txn(n));
    let (mut lo, mut hi) = (1usize, 1 << 18);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, delete_put_txn(lo))
}

fn watch_create(key: &[u8], range_end: &[u8], start: i64, prev_kv: bool) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_vec().into(),
                range_end: range_end.to_vec().into(),
                start_revision: start,
                prev_kv,
                ..Default::default()
            },
        )),
    }
}

/// Puts `count` values of `value_bytes` to keys `key(i)` through `endpoint`, from
/// `parallel` tasks; returns the highest revision written.
async fn put_many(
    endpoint: &str,
    count: usize,
    parallel: usize,
    value_bytes: usize,
    key: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
) -> Result<i64, String> {
    let key = Arc::new(key);
    let mut tasks = Vec::new();
    for t in 0..parallel {
        let mut kv = kv_client(channel(endpoint));
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut top = 0;
            for i in (t..count).step_by(parallel) {
                let req = pb::PutRequest {
                    key: key(i).into(),
                    value: vec![b'v'; value_bytes].into(),
                    ..Default::default()
                };
                let r =
                    within("a put", Duration::from_secs(30), async { retry!(kv.put(req.clone())) });
                let r = grpc("a put", r.await?)?;
                top = top.max(r.header.map_or(0, |h| h.revision));
            }
            Ok::<i64, String>(top)
        }));
    }
    let mut top = 0;
    for t in tasks {
        top = top.max(t.await.map_err(|e| format!("put task: {e}"))??);
    }
    Ok(top)
}

// ---- measuring ----

/// What the probe saw during one case.
#[derive(Default)]
struct ProbeStats {
    reads: u64,
    max: Duration,
    errors: u64,
    first_error: Option<String>,
}

async fn probe_loop(endpoint: String, mut stop: tokio::sync::watch::Receiver<bool>) -> ProbeStats {
    let mut kv = kv_client(channel(&endpoint));
    let req = pb::RangeRequest { key: "hostile/probe".into(), ..Default::default() };
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats = ProbeStats::default();
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let start = Instant::now();
        let r = tokio::time::timeout(PROBE_TIMEOUT, kv.range(req.clone())).await;
        stats.reads += 1;
        stats.max = stats.max.max(start.elapsed());
        let error = match r {
            Ok(Ok(_)) => continue,
            Ok(Err(s)) => format!("{:?} {}", s.code(), s.message()),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        stats.errors += 1;
        stats.first_error.get_or_insert(error);
    }
    stats
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak memory of each member during a case.
struct Memory {
    pids: Vec<u32>,
    /// Whether `VmHWM` was reset at the start (else only the samples count).
    hwm_reset: Vec<bool>,
    sampled_kib: Arc<Vec<AtomicU64>>,
    start_kib: Vec<u64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Memory {
    fn start(pids: Vec<u32>) -> Memory {
        // Writing 5 to clear_refs resets the peak resident set size (VmHWM).
        let hwm_reset =
            pids.iter().map(|p| std::fs::write(format!("/proc/{p}/clear_refs"), "5").is_ok());
        let hwm_reset = hwm_reset.collect();
        let start_kib = pids.iter().map(|&p| proc_status_kib(p, "VmRSS:").unwrap_or(0)).collect();
        let sampled_kib: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| 0.into()).collect());
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (samples, sample_pids) = (sampled_kib.clone(), pids.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !*stopped.borrow() {
                for (pid, peak) in sample_pids.iter().zip(samples.iter()) {
                    if let Some(kib) = proc_status_kib(*pid, "VmRSS:") {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => {}
                }
            }
        });
        Memory { pids, hwm_reset, sampled_kib, start_kib, stop, task }
    }

    /// Each member's peak and its resident size at the start, in MiB.
    async fn finish(self) -> Vec<(u64, u64)> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        (0..self.pids.len())
            .map(|i| {
                let sampled = self.sampled_kib[i].load(Ordering::Relaxed);
                let hwm = if self.hwm_reset[i] {
                    proc_status_kib(self.pids[i], "VmHWM:").unwrap_or(0)
                } else {
                    0
                };
                let start = self.start_kib[i];
                (sampled.max(hwm).max(start) / 1024, start / 1024)
            })
            .collect()
    }
}

/// The highest Raft term any member reports (every election raises it).
async fn highest_term(cluster: &TestCluster) -> u64 {
    let mut top = 0;
    for i in 0..cluster.members().len() {
        let mut m = MaintenanceClient::new(channel(&cluster.endpoint(i)));
        let s = within("status", Duration::from_secs(5), m.status(pb::StatusRequest {})).await;
        if let Ok(Ok(s)) = s {
            top = top.max(s.into_inner().raft_term);
        }
    }
    top
}

/// A put through every member, each read back linearizably on every member.
async fn serves_normally(cluster: &TestCluster, case: &str) -> Result<(), String> {
    let key = format!("hostile/after/{case}");
    for i in 0..cluster.members().len() {
        let value = format!("through m{}", i + 1);
        let mut kv = kv_client(channel(&cluster.endpoint(i)));
        let put = pb::PutRequest {
            key: key.clone().into(),
            value: value.clone().into(),
            ..Default::default()
        };
        let r = within("put", Duration::from_secs(10), async { retry!(kv.put(put.clone())) }).await;
        grpc(&format!("put through m{}", i + 1), r?)?;
        for j in 0..cluster.members().len() {
            let mut kv = kv_client(channel(&cluster.endpoint(j)));
            let get = pb::RangeRequest { key: key.clone().into(), ..Default::default() };
            let r = within("get", Duration::from_secs(10), async { retry!(kv.range(get.clone())) })
                .await;
            let r = grpc(&format!("get on m{}", j + 1), r?)?;
            if r.kvs.first().map(|kv| kv.value.to_vec()) != Some(value.clone().into_bytes()) {
                return Err(format!("m{} does not read {key} = {value} back", j + 1));
            }
        }
    }
    Ok(())
}

/// Waits (up to [`SETTLE_TIMEOUT`]) until the cluster serves normally again, so that
/// a case that left work behind (a request still applying) does not spoil the next.
async fn settle(cluster: &TestCluster, case: &str) {
    let start = Instant::now();
    while start.elapsed() < SETTLE_TIMEOUT {
        if serves_normally(cluster, case).await.is_ok() {
            eprintln!(
                "hostile: serving again {} ms after case {case}",
                start.elapsed().as_millis()
            );
            return;
        }
    }
    panic!("the cluster does not serve within {SETTLE_TIMEOUT:?} after case {case}");
}

/// One line of the table.
struct Row {
    case: String,
    /// The member the probe and the load went to.
    target: usize,
    probe: ProbeStats,
    elections: u64,
    /// Each member's peak and starting resident size (MiB).
    rss_mib: Vec<(u64, u64)>,
    after: Result<(), String>,
    outcome: CaseResult,
}

/// Measures one case run against `cluster` with the probe on member `target`.
struct Measure {
    case: String,
    target: usize,
    term: u64,
    memory: Memory,
    probe_stop: tokio::sync::watch::Sender<bool>,
    probe: tokio::task::JoinHandle<ProbeStats>,
}

impl Measure {
    async fn start(cluster: &TestCluster, target: usize, case: &str) -> Measure {
        eprintln!("hostile: case {case} starts (probe and load on m{})", target + 1);
        let term = highest_term(cluster).await;
        let pids = (0..cluster.members().len()).map(|i| cluster.pid(i).expect("running"));
        let memory = Memory::start(pids.collect());
        let (probe_stop, stop) = tokio::sync::watch::channel(false);
        let probe = tokio::spawn(probe_loop(cluster.endpoint(target), stop));
        Measure { case: case.to_string(), target, term, memory, probe_stop, probe }
    }

    async fn finish(self, cluster: &TestCluster, outcome: CaseResult) -> Row {
        let _ = self.probe_stop.send(true);
        let probe = self.probe.await.expect("the probe task does not panic");
        let rss_mib = self.memory.finish().await;
        let after = serves_normally(cluster, &self.case).await;
        let elections = highest_term(cluster).await.saturating_sub(self.term);
        eprintln!("hostile: case {} done: {outcome:?}, after: {after:?}", self.case);
        if after.is_err() {
            settle(cluster, &self.case).await;
        }
        Row { case: self.case, target: self.target, probe, elections, rss_mib, after, outcome }
    }
}

fn print_table(scale: &Scale, rows: &[Row]) {
    let size = if scale.full { "full size" } else { "CI scale" };
    println!("\nhostile-load suite, {size}: {scale:?}");
    println!(
        "| case | probe max ms (reads, errors) | leader changes | peak RSS MiB (growth) m1/m2/m3 | ok after | notes |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let rss = r.rss_mib.iter().enumerate().map(|(i, (peak, start))| {
            let target = if i == r.target { "*" } else { "" };
            format!("{target}{peak} (+{})", peak - start)
        });
        let rss: Vec<String> = rss.collect();
        let after = match &r.after {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("NO: {e}"),
        };
        let mut notes = match &r.outcome {
            Ok(n) => n.clone(),
            Err(e) => format!("CASE FAILED: {e}"),
        };
        if let Some(e) = &r.probe.first_error {
            notes.push_str(&format!("; first probe error: {e}"));
        }
        println!(
            "| {} | {} ({}, {}) | {} | {} | {} | {} |",
            r.case,
            r.probe.max.as_millis(),
            r.probe.reads,
            r.probe.errors,
            r.elections,
            rss.join("/"),
            after,
            notes
        );
    }
    println!(
        "(* the member the probe and the load went to; leader changes: rise of the highest term)\n"
    );
}

/// How much more memory the member serving the slow watchers grew by than the other
/// members did (they apply the same writes, so the difference is what the watchers
/// cost), in MiB.
fn watch_growth_mib(row: &Row) -> i64 {
    let growth = |(peak, start): (u64, u64)| peak as i64 - start as i64;
    let others = (0..row.rss_mib.len()).filter(|&i| i != row.target);
    let others = others.map(|i| growth(row.rss_mib[i])).max().unwrap_or(0);
    growth(row.rss_mib[row.target]) - others
}

// ---- the cases ----

/// (a) The largest accepted transaction, `repeats` times.
async fn largest_txn(endpoint: &str, repeats: usize) -> CaseResult {
    let (n, txn) = largest_delete_put_txn();
    let bytes = prost::Message::encoded_len(&txn);
    eprintln!("hostile: the largest txn: {n} deletes + {n} puts, {bytes} bytes");
    let mut kv = kv_client(channel(endpoint));
    let mut worst = Duration::ZERO;
    for _ in 0..repeats {
        let start = Instant::now();
        let r = within("the largest txn", LARGEST_TXN_TIMEOUT, kv.txn(txn.clone())).await?;
        let r = grpc("the largest txn", r)?;
        if !r.succeeded {
            return Err("the largest txn did not succeed".into());
        }
        worst = worst.max(start.elapsed());
    }
    Ok(format!(
        "{repeats} txns of {n} deletes + {n} puts ({bytes} bytes), worst answer {} ms",
        worst.as_millis()
    ))
}

fn range_key(i: usize) -> Vec<u8> {
    format!("r/{i:07}").into_bytes()
}

/// Loads `count` keys for the range case, in large put-only transactions.
async fn load_range_keys(endpoint: &str, count: usize) -> Result<Duration, String> {
    const PER_TXN: usize = 40_000;
    let start = Instant::now();
    let mut kv = kv_client(channel(endpoint));
    for first in (0..count).step_by(PER_TXN) {
        let puts = (first..count.min(first + PER_TXN))
            .map(|i| put_op(range_key(i), b"sixteen bytes..!".to_vec()))
            .collect();
        let txn = pb::TxnRequest { success: vec![tree(puts)], ..Default::default() };
        let r =
            within("a loading txn", Duration::from_secs(60), async { retry!(kv.txn(txn.clone())) });
        grpc("a loading txn", r.await?)?;
    }
    Ok(start.elapsed())
}

/// (b) Ranges over every loaded key, serializable and linearizable, whole,
/// `count_only` and `limit` 10.
async fn big_ranges(cluster: &TestCluster, target: usize, scale: &Scale) -> CaseResult {
    let n = scale.range_keys;
    let whole = pb::RangeRequest {
        key: "r/".into(),
        range_end: client::prefix_end(b"r/").into(),
        ..Default::default()
    };
    let kinds = [
        ("whole", pb::RangeRequest { ..whole.clone() }),
        ("count_only", pb::RangeRequest { count_only: true, ..whole.clone() }),
        ("limit 10", pb::RangeRequest { limit: 10, ..whole.clone() }),
    ];
    let mut notes = Vec::new();
    for serializable in [true, false] {
        for (name, req) in &kinds {
            let req = pb::RangeRequest { serializable, ..req.clone() };
            let mut worst = Duration::ZERO;
            for _ in 0..scale.range_repeats {
                let mut kv = kv_client(channel(&cluster.endpoint(target)));
                let start = Instant::now();
                let r = within("a range", Duration::from_secs(60), kv.range(req.clone())).await?;
                let r = grpc(&format!("range {name}"), r)?;
                worst = worst.max(start.elapsed());
                let want_kvs = match *name {
                    "whole" => n,
                    "count_only" => 0,
                    _ => 10,
                };
                if r.count != n as i64 || r.kvs.len() != want_kvs {
                    return Err(format!(
                        "range {name}: count {} and {} kvs, want {n} and {want_kvs}",
                        r.count,
                        r.kvs.len()
                    ));
                }
            }
            let kind = if serializable { "ser" } else { "lin" };
            notes.push(format!("{kind} {name} {} ms", worst.as_millis()));
        }
    }
    Ok(format!("{n} keys; worst of {}: {}", scale.range_repeats, notes.join(", ")))
}

/// (b2) One delete range over the `count` keys the range case loaded.
async fn delete_range_keys(endpoint: &str, count: usize) -> CaseResult {
    let mut kv = kv_client(channel(endpoint));
    let all = pb::DeleteRangeRequest {
        key: "r/".into(),
        range_end: client::prefix_end(b"r/").into(),
        ..Default::default()
    };
    let start = Instant::now();
    let r = within("the delete range", LARGEST_TXN_TIMEOUT, kv.delete_range(all)).await?;
    let r = grpc("the delete range", r)?;
    if r.deleted != count as i64 {
        return Err(format!("the delete range deleted {} keys, want {count}", r.deleted));
    }
    Ok(format!("deleted {count} keys in {} ms", start.elapsed().as_millis()))
}

/// (c) `watchers` watchers from revision 1 on a hot key with `history` changes, on
/// 10 connections, each watcher reading until it has every change.
async fn hot_key_watchers(endpoint: &str, watchers: usize, history: usize) -> CaseResult {
    const CONNECTIONS: usize = 10;
    const STREAMS_PER_CONNECTION: usize = 10;
    let streams = CONNECTIONS * STREAMS_PER_CONNECTION;
    let per_stream = watchers.div_ceil(streams);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let ch = channel(endpoint);
        for _ in 0..STREAMS_PER_CONNECTION {
            let mut client = WatchClient::new(ch.clone()).max_decoding_message_size(64 << 20);
            tasks.push(tokio::spawn(async move {
                let (tx, rx) = tokio::sync::mpsc::channel(per_stream);
                for _ in 0..per_stream {
                    tx.send(watch_create(b"hot", b"", 1, false)).await.unwrap();
                }
                let what = format!("a hot-key watch stream on connection {c}");
                let mut stream = grpc(&what, client.watch(ReceiverStream::new(rx)).await)?;
                let mut seen = std::collections::HashMap::<i64, usize>::new();
                let mut done = 0;
                while done < per_stream {
                    let r = stream.message().await.map_err(|s| format!("{what}: {s}"))?;
                    let r = r.ok_or_else(|| format!("{what} ended"))?;
                    if r.canceled {
                        return Err(format!("{what}: canceled: {}", r.cancel_reason));
                    }
                    let count = seen.entry(r.watch_id).or_default();
                    let before = *count;
                    *count += r.events.len();
                    if before < history && *count >= history {
                        done += 1;
                    }
                }
                drop(tx);
                Ok::<(), String>(())
            }));
        }
    }
    let all = async {
        for t in tasks {
            t.await.map_err(|e| format!("watch task: {e}"))??;
        }
        Ok::<(), String>(())
    };
    within("every watcher catching up", Duration::from_secs(120), all).await??;
    Ok(format!(
        "{} watchers ({streams} streams) got {history} changes each in {} ms",
        per_stream * streams,
        start.elapsed().as_millis()
    ))
}

/// (d) `count` leases granted (TTL 300 s), a tenth kept alive twice, all revoked.
async fn many_leases(endpoint: &str, count: usize) -> CaseResult {
    const PARALLEL: usize = 32;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..PARALLEL {
        let mut lease = LeaseClient::new(channel(endpoint));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (t..count).step_by(PARALLEL) {
                let req = pb::LeaseGrantRequest { ttl: 300, id: 0 };
                let r = within("a grant", Duration::from_secs(30), async {
                    retry!(lease.lease_grant(req))
                });
                ids.push(grpc("a grant", r.await?)?.id);
            }
            Ok::<Vec<i64>, String>(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.map_err(|e| format!("grant task: {e}"))??);
    }
    let granted = start.elapsed();

    // Keep-alive on a share, on one stream, twice.
    let kept: Vec<i64> = ids.iter().step_by(10).copied().collect();
    // The first round is queued before the call: etcd (grpc-go) sends a stream's
    // response headers with its first answer, so a client that waits for the call to
    // return before sending anything waits forever there.
    let mut lease = LeaseClient::new(channel(endpoint));
    let (tx, rx) = tokio::sync::mpsc::channel(kept.len().max(1));
    for &id in &kept {
        tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
    }
    let call = lease.lease_keep_alive(ReceiverStream::new(rx));
    let mut stream =
        grpc("keep-alive", within("keep-alive", Duration::from_secs(30), call).await?)?;
    for round in 0..2 {
        if round > 0 {
            for &id in &kept {
                tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
            }
        }
        for _ in 0..kept.len() {
            let r =
                within("a keep-alive answer", Duration::from_secs(30), stream.message()).await?;
            let r = r.map_err(|s| format!("keep-alive: {s}"))?.ok_or("keep-alive ended")?;
            if r.ttl <= 0 {
                return Err(format!("lease {} not alive at its keep-alive", r.id));
            }
        }
    }
    drop(tx);

    let revoke_start = Instant::now();
    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for t in 0..PARALLEL {
        let mut lease = LeaseClient::new(channel(endpoint));
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for &id in ids.iter().skip(t).step_by(PARALLEL) {
                let req = pb::LeaseRevokeRequest { id };
                let r = within("a revoke", Duration::from_secs(30), async {
                    retry!(lease.lease_revoke(req))
                });
                grpc("a revoke", r.await?)?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("revoke task: {e}"))??;
    }
    Ok(format!(
        "{} granted in {} ms, {} kept alive twice, all revoked in {} ms",
        ids.len(),
        granted.as_millis(),
        kept.len(),
        revoke_start.elapsed().as_millis()
    ))
}

/// The soft limit on open files of this process (the members inherit it).
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files"));
    line.and_then(|l| l.split_whitespace().nth(3)?.parse().ok()).unwrap_or(1024)
}

/// (e) `count` idle watch streams (one watcher each, created), held while writes flow
/// elsewhere.
async fn idle_streams(endpoint: &str, count: usize) -> CaseResult {
    // One file per connection here and one in the member; keep a margin for the rest.
    let connections = count.div_ceil(STREAMS_PER_CONNECTION);
    let allowed = open_files_limit().saturating_sub(512);
    let connections = connections.min(allowed).max(1);
    let count = count.min(connections * STREAMS_PER_CONNECTION);
    let start = Instant::now();
    let mut held = Vec::new();
    for c in 0..connections {
        let ch = Endpoint::from_shared(endpoint.to_string()).unwrap();
        let ch = within("connect", Duration::from_secs(10), ch.connect()).await?;
        let ch = ch.map_err(|e| format!("connection {c}: {e}"))?;
        let mut opening = Vec::new();
        for s in 0..STREAMS_PER_CONNECTION.min(count - c * STREAMS_PER_CONNECTION) {
            let mut client = WatchClient::new(ch.clone());
            let key = format!("idle/{c}/{s}").into_bytes();
            opening.push(async move {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.send(watch_create(&key, b"", 0, false)).await.unwrap();
                let mut stream =
                    grpc("an idle watch", client.watch(ReceiverStream::new(rx)).await)?;
                let created = stream.message().await.map_err(|s| format!("idle watch: {s}"))?;
                if !created.is_some_and(|r| r.created && !r.canceled) {
                    return Err("an idle watch was not created".to_string());
                }
                Ok::<_, String>((tx, stream))
            });
        }
        let opened = within("opening streams", Duration::from_secs(30), join_all(opening)).await?;
        for o in opened {
            held.push(o?);
        }
    }
    let opened_in = start.elapsed();
    put_many(endpoint, 200, 4, 100, |i| format!("idle-other/{}", i % 10).into_bytes()).await?;
    let streams = held.len();
    drop(held);
    Ok(format!(
        "{streams} streams on {connections} connections (open files limit {}), opened in {} ms, \
         200 puts while held",
        open_files_limit(),
        opened_in.as_millis()
    ))
}

/// Runs futures at once, in order of their results.
async fn join_all<F: Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task does not panic"));
    }
    out
}

/// (f) Two watch streams on `slow/` (one with `prev_kv`) that are never read while
/// `bytes` of 64 KiB values are written to 16 keys, compacted every 16 MiB so that the
/// state itself stays small. Then one is read: what it delivers must be in order,
/// without gaps, and end in either every change or a compaction notice.
async fn slow_watchers(cluster: &TestCluster, target: usize, bytes: usize) -> CaseResult {
    const VALUE: usize = 64 << 10;
    const COMPACT_EVERY: usize = (16 << 20) / VALUE;
    let endpoint = cluster.endpoint(target);
    let mut kv = kv_client(channel(&endpoint));
    let first = grpc(
        "a get",
        kv.range(pb::RangeRequest { key: "slow/".into(), ..Default::default() }).await,
    );
    let first = first?.header.map_or(0, |h| h.revision) + 1;
    let mut slow = Vec::new();
    for prev_kv in [false, true] {
        let mut client = WatchClient::new(channel(&endpoint)).max_decoding_message_size(64 << 20);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(watch_create(b"slow/", &client::prefix_end(b"slow/"), first, prev_kv))
            .await
            .unwrap();
        let stream = grpc("a slow watch", client.watch(ReceiverStream::new(rx)).await)?;
        slow.push((tx, stream));
    }
    let writes = bytes / VALUE;
    let start = Instant::now();
    let mut last = 0;
    for batch in 0..writes.div_ceil(COMPACT_EVERY) {
        let n = COMPACT_EVERY.min(writes - batch * COMPACT_EVERY);
        last =
            put_many(&endpoint, n, 4, VALUE, |i| format!("slow/{}", i % 16).into_bytes()).await?;
        let compact = pb::CompactionRequest { revision: last, physical: false };
        grpc("compact", within("compact", Duration::from_secs(30), kv.compact(compact)).await?)?;
    }
    let written_in = start.elapsed();

    // The slow client catches up now: in order, no gaps, then either everything or
    // the compaction notice.
    let (tx, mut stream) = slow.swap_remove(0);
    drop(slow);
    let mut next = first;
    let mut events = 0;
    let ending = loop {
        let r = within("a slow watch catching up", Duration::from_secs(60), stream.message());
        let r = r.await?.map_err(|s| format!("slow watch: {s}"))?.ok_or("slow watch ended")?;
        if r.canceled {
            if r.compact_revision > 0 && r.compact_revision >= next {
                break format!("compacted notice at {} after {events} events", r.compact_revision);
            }
            return Err(format!("slow watch canceled at {next}: {r:?}"));
        }
        for e in &r.events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if rev != next {
                return Err(format!("slow watch: event at {rev}, expected {next}"));
            }
            next = rev + 1;
            events += 1;
        }
        if next > last {
            break format!("all {events} events");
        }
    };
    drop(tx);
    Ok(format!(
        "{} MiB written in {} ms while 2 streams did not read; the reader then got {ending}",
        bytes >> 20,
        written_in.as_millis()
    ))
}

/// Whether this build's server takes `--quota-backend-bytes`.
fn quota_supported() -> bool {
    let (_, help, _) = common::raftkv(&["server", "--help"]);
    help.contains("--quota-backend-bytes")
}

fn is_no_space(s: &tonic::Status) -> bool {
    s.message().contains("database space exceeded")
}

/// (g) Writes until NOSPACE, then etcd's recovery (compact, defragment every member,
/// disarm), checking what works while the alarm is raised.
async fn quota_recovery(cluster: &TestCluster, target: usize, quota: usize) -> CaseResult {
    const VALUE: usize = 64 << 10;
    let endpoint = cluster.endpoint(target);
    let mut kv = kv_client(channel(&endpoint));
    let mut written = 0;
    let tripped = loop {
        if written > 8 * quota {
            return Err(format!(
                "no NOSPACE after {} MiB with a {} MiB quota",
                written >> 20,
                quota >> 20
            ));
        }
        let key = format!("quota/{}", (written / VALUE) % 64);
        let put = pb::PutRequest {
            key: key.into(),
            value: vec![b'q'; VALUE].into(),
            ..Default::default()
        };
        match within("a put", Duration::from_secs(30), async { retry!(kv.put(put.clone())) })
            .await?
        {
            Ok(_) => written += VALUE,
            Err(s) if is_no_space(&s) => break s,
            Err(s) => return Err(format!("a put before the quota: {s}")),
        }
    };
    if tripped.code() != tonic::Code::ResourceExhausted {
        return Err(format!("NOSPACE has code {:?}, etcd's is ResourceExhausted", tripped.code()));
    }
    let mut m = MaintenanceClient::new(channel(&endpoint));
    let get = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Get as i32,
        ..Default::default()
    };
    let alarms = grpc("alarm list", m.alarm(get).await)?.alarms;
    if !alarms.iter().any(|a| a.alarm == pb::AlarmType::Nospace as i32) {
        return Err(format!("alarm list after NOSPACE: {alarms:?}"));
    }
    // Reads and deletes work; puts do not.
    let range = pb::RangeRequest { key: "quota/1".into(), ..Default::default() };
    grpc("a get under NOSPACE", kv.range(range).await)?;
    let delete = pb::DeleteRangeRequest { key: "quota/0".into(), ..Default::default() };
    grpc("a delete under NOSPACE", kv.delete_range(delete).await)?;
    let put = pb::PutRequest { key: "quota/x".into(), value: "x".into(), ..Default::default() };
    match kv.put(put.clone()).await {
        Err(s) if is_no_space(&s) => {}
        other => return Err(format!("a put under NOSPACE: {other:?}")),
    }
    // etcd's recovery: compact to the current revision, defragment, disarm.
    let revision = grpc(
        "get",
        kv.range(pb::RangeRequest { key: "quota/1".into(), ..Default::default() }).await,
    )?
    .header
    .map_or(0, |h| h.revision);
    grpc("compact", kv.compact(pb::CompactionRequest { revision, physical: true }).await)?;
    for i in 0..cluster.members().len() {
        let mut mi = MaintenanceClient::new(channel(&cluster.endpoint(i)));
        let r =
            within("defragment", Duration::from_secs(60), mi.defragment(pb::DefragmentRequest {}));
        grpc(&format!("defragment m{}", i + 1), r.await?)?;
    }
    // Disarm what is raised now, not only what was listed before: etcd's members raise
    // NOSPACE for themselves when their own file crosses the quota, so by now more
    // members may hold one (raftkv raises one alarm). An operator repeats `alarm
    // disarm` until the list is empty; so does this, a bounded number of times.
    let mut raised = alarms;
    for _ in 0..3 {
        for a in &raised {
            let disarm = pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Deactivate as i32,
                member_id: a.member_id,
                alarm: a.alarm,
            };
            grpc("alarm disarm", m.alarm(disarm).await)?;
        }
        raised = grpc("alarm list", m.alarm(get).await)?.alarms;
        if raised.is_empty() {
            break;
        }
    }
    let left = raised;
    if !left.is_empty() {
        return Err(format!("alarms after disarm: {left:?}"));
    }
    grpc("a put after recovery", kv.put(put).await)?;
    Ok(format!("NOSPACE after {} MiB (quota {} MiB); recovered", written >> 20, quota >> 20))
}

/// One cluster at a time: each test here loads its cluster hard on 2 cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Clients that never read their watch streams cost the member a bounded amount of
/// memory, whatever is written (etcd's slow watchers): 64 MiB are written, then eight
/// streams watch `lag/` from before the writes and read nothing while 16 MiB more are
/// written. Catching up from history fills whole responses of 1 MiB: before the queue
/// had a byte bound, each stream queued 64 of them, 512 MiB in all. The watched member
/// may grow at most [`LAGGING_STREAMS_GROWTH_MAX_MIB`]. Then every stream reads: each
/// gets every change, in order, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_nobody_reads_cost_bounded_memory_and_lose_nothing() {
    const STREAMS: usize = 8;
    const VALUE: usize = 4 << 10;
    const WRITES: usize = (64 << 20) / VALUE;
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("hostile-lag", &[]);
    cluster.wait_ready().await;
    let target = cluster.leader().await;
    let endpoint = cluster.endpoint(target);
    let mut kv = kv_client(channel(&endpoint));
    let get = pb::RangeRequest { key: "lag/".into(), ..Default::default() };
    let first = kv.range(get).await.unwrap().into_inner().header.unwrap().revision + 1;
    let key = |i: usize| format!("lag/{}", i % 64).into_bytes();
    put_many(&endpoint, WRITES, 8, VALUE, key).await.unwrap();

    let memory = Memory::start((0..3).map(|i| cluster.pid(i).unwrap()).collect());
    let mut lagging = Vec::new();
    for _ in 0..STREAMS {
        let mut client = WatchClient::new(channel(&endpoint)).max_decoding_message_size(64 << 20);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(watch_create(b"lag/", &client::prefix_end(b"lag/"), first, false)).await.unwrap();
        let stream = client.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
        lagging.push((tx, stream));
    }
    let key = |i: usize| format!("lag/{}", i % 64).into_bytes();
    let last = put_many(&endpoint, WRITES / 4, 8, VALUE, key).await.unwrap();
    let rss_mib = memory.finish().await;
    let (peak, start) = rss_mib[target];
    let growth = peak - start;
    println!(
        "{STREAMS} lagging streams: the watched member grew {growth} MiB (to {peak} MiB); \
         every member's (peak, start) MiB: {rss_mib:?}"
    );

    for (n, (tx, mut stream)) in lagging.into_iter().enumerate() {
        let mut next = first;
        while next <= last {
            let r = common::next_message(&format!("lagging stream {n}"), &mut stream).await;
            let r = r.unwrap_or_else(|| panic!("lagging stream {n} ended at {next}"));
            assert!(!r.canceled, "lagging stream {n} canceled at {next}: {}", r.cancel_reason);
            for e in &r.events {
                let rev = e.kv.as_ref().unwrap().mod_revision;
                assert_eq!(rev, next, "lagging stream {n}: every change once, in order");
                next += 1;
            }
        }
        drop(tx);
    }
    assert!(
        growth < LAGGING_STREAMS_GROWTH_MAX_MIB,
        "{STREAMS} streams nobody reads cost their member {growth} MiB"
    );
}

/// Case (g) as etcd 3.4 itself answers it (a cluster of real `etcd` processes with the
/// same quota), so that the case pins etcd's behaviour before raftkv has a quota.
/// Skipped, with a message, when etcd is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_case_passes_against_etcd() {
    if !common::have("etcd", "--version") {
        println!("SKIPPED: etcd is not installed");
        return;
    }
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let quota = (16usize << 20).to_string();
    let spec = common::ClusterSpec::etcd("hostile-etcd-quota", &["--quota-backend-bytes", &quota]);
    let cluster = TestCluster::start_spec(spec);
    cluster.wait_ready().await;
    let target = cluster.leader().await;
    let outcome = quota_recovery(&cluster, target, 16 << 20).await;
    println!("etcd, case g: {outcome:?}");
    assert!(outcome.is_ok(), "the quota case against etcd: {outcome:?}");
    serves_normally(&cluster, "etcd-quota").await.unwrap();
}

/// Starts the 3-member cluster the cases run on: raftkv members, or real `etcd` 3.4
/// members for the side-by-side figures.
fn start_cluster(server: common::Server, tag: &str, flags: &[&str]) -> TestCluster {
    let spec = match server {
        common::Server::Raftkv => common::ClusterSpec::raftkv(tag, flags),
        common::Server::Etcd => {
            let mut all = vec!["--log-level", "error"];
            all.extend_from_slice(flags);
            common::ClusterSpec::etcd(&format!("{tag}-etcd"), &all)
        }
    };
    TestCluster::start_spec(spec)
}

/// Every case in turn on one cluster of `server` members (the quota case on its own,
/// with a small quota); the rows of the table.
async fn run_cases(server: common::Server, scale: &Scale) -> Vec<Row> {
    let cluster = start_cluster(server, "hostile", &[]);
    cluster.wait_ready().await;
    let mut rows = Vec::new();

    let target = cluster.leader().await;
    let m = Measure::start(&cluster, target, "a largest txn").await;
    let outcome = largest_txn(&cluster.endpoint(target), scale.txn_repeats).await;
    rows.push(m.finish(&cluster, outcome).await);

    let target = cluster.leader().await;
    let loaded = load_range_keys(&cluster.endpoint(target), scale.range_keys).await;
    let m = Measure::start(&cluster, target, "b big ranges").await;
    let outcome = match loaded {
        Ok(took) => big_ranges(&cluster, target, scale)
            .await
            .map(|n| format!("{n}; loaded in {} ms", took.as_millis())),
        Err(e) => Err(format!("loading: {e}")),
    };
    rows.push(m.finish(&cluster, outcome).await);

    let target = cluster.leader().await;
    let m = Measure::start(&cluster, target, "b2 delete range").await;
    let outcome = delete_range_keys(&cluster.endpoint(target), scale.range_keys).await;
    rows.push(m.finish(&cluster, outcome).await);

    let target = cluster.leader().await;
    let hot =
        put_many(&cluster.endpoint(target), scale.hot_key_history, 16, 100, |_| b"hot".to_vec())
            .await;
    let m = Measure::start(&cluster, target, "c hot-key watchers").await;
    let outcome = match hot {
        Ok(_) => {
            hot_key_watchers(&cluster.endpoint(target), scale.watchers, scale.hot_key_history).await
        }
        Err(e) => Err(format!("writing the hot key: {e}")),
    };
    rows.push(m.finish(&cluster, outcome).await);

    let target = cluster.leader().await;
    let m = Measure::start(&cluster, target, "d leases").await;
    let outcome = many_leases(&cluster.endpoint(target), scale.leases).await;
    rows.push(m.finish(&cluster, outcome).await);

    let target = cluster.leader().await;
    let m = Measure::start(&cluster, target, "e idle streams").await;
    let outcome = idle_streams(&cluster.endpoint(target), scale.idle_streams).await;
    rows.push(m.finish(&cluster, outcome).await);

    let target = cluster.leader().await;
    let m = Measure::start(&cluster, target, "f slow watchers").await;
    let outcome = slow_watchers(&cluster, target, scale.slow_watch_bytes).await;
    rows.push(m.finish(&cluster, outcome).await);
    drop(cluster);

    if server == common::Server::Etcd || quota_supported() {
        let quota = scale.quota_bytes.to_string();
        let cluster = start_cluster(server, "hostile-quota", &["--quota-backend-bytes", &quota]);
        cluster.wait_ready().await;
        let target = cluster.leader().await;
        let m = Measure::start(&cluster, target, "g quota").await;
        let outcome = quota_recovery(&cluster, target, scale.quota_bytes).await;
        rows.push(m.finish(&cluster, outcome).await);
    } else {
        println!("\n!!! hostile case g SKIPPED: no quota support in this build (raftkv server has no --quota-backend-bytes) !!!\n");
    }
    rows
}

/// The same cases against real `etcd` 3.4 members, for the side-by-side table; nothing
/// is asserted (etcd's figures are the reference, not a goal). It takes as long as the
/// raftkv suite, so it is run by hand:
/// `cargo test --release -p raftkv --test hostile -- --ignored --nocapture the_hostile_cases_against_etcd`
/// (with `RAFTKV_HOSTILE_FULL=1` for the sizes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reference figures from etcd, run by hand"]
async fn the_hostile_cases_against_etcd() {
    if !common::have("etcd", "--version") {
        println!("SKIPPED: etcd is not installed");
        return;
    }
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let scale = Scale::pick();
    let rows = run_cases(common::Server::Etcd, &scale).await;
    println!("\netcd 3.4 members:");
    print_table(&scale, &rows);
}

/// Every case in turn on one raftkv cluster (the quota case on its own, with a small
/// quota); the table first, then the assertions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_load_leaves_the_cluster_serving_without_a_leader_change() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let scale = Scale::pick();
    println!("hostile-load scale ({FULL_ENV}=1 for the issue's sizes): {scale:?}");
    let rows = run_cases(common::Server::Raftkv, &scale).await;

    print_table(&scale, &rows);
    let slow = rows.iter().find(|r| r.case.starts_with("f ")).expect("case f ran");
    println!(
        "case f: the slow watchers' member grew {} MiB more than the others",
        watch_growth_mib(slow)
    );
    for r in &rows {
        assert!(r.outcome.is_ok(), "case {}: {:?}", r.case, r.outcome);
        assert!(
            r.after.is_ok(),
            "case {}: the cluster does not serve normally after it: {:?}",
            r.case,
            r.after
        );
        assert_eq!(r.elections, 0, "case {}: no leader change", r.case);
        assert!(r.probe.errors == 0, "case {}: probe errors: {:?}", r.case, r.probe.first_error);
        assert!(
            r.probe.max < PROBE_ASSERTED,
            "case {}: probe worst latency {:?} (goal {PROBE_GOAL:?}, asserted {PROBE_ASSERTED:?})",
            r.case,
            r.probe.max
        );
    }
    assert!(
        watch_growth_mib(slow) < SLOW_WATCH_GROWTH_MAX_MIB,
        "clients that do not read cost the member at most {SLOW_WATCH_GROWTH_MAX_MIB} MiB"
    );
}
