//! An etcd operator's set-up on a raftkv member: etcd 3.4's server flags in a unit
//! file, etcd's `/health` and `/metrics` on every client URL (HTTP/1.1 next to gRPC),
//! etcd's metric names and types, a config file with several bad keys, and the per-peer
//! series the etcd mixin's alerts read on a 3-member cluster as members fail and leave.

mod common;

use common::TestCluster;
use proto::etcdserverpb as pb;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// etcd 3.4's series this member must export, with etcd's types.
const ETCD_SERIES: [(&str, &str); 13] = [
    ("etcd_server_has_leader", "gauge"),
    ("etcd_server_is_leader", "gauge"),
    ("etcd_server_leader_changes_seen_total", "counter"),
    ("etcd_server_proposals_committed_total", "gauge"),
    ("etcd_server_proposals_applied_total", "gauge"),
    ("etcd_server_proposals_failed_total", "counter"),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
    ("etcd_server_proposals_pending", "gauge"),
    ("etcd_server_quota_backend_bytes", "gauge"),
    ("grpc_server_handled_total", "counter"),
    ("grpc_server_handling_seconds", "histogram"),
    ("raftkv_commit_index", "gauge"),
];

/// Kills the member when the test ends, failing or not.
struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.1 on `port`: the status code and body, or `None`.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    sock.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = sock.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string()))
}

/// True if `line` has the shape of an etcd 3.4 zap line: `{"level":"info","ts":
/// "2026-12-04T05:31:43.460Z","caller":"embed/etcd.go:117","msg":"…"` and more fields.
fn is_zap_line(line: &str) -> bool {
    let Some(rest) = ["debug", "info", "warn", "error"]
        .iter()
        .find_map(|l| line.strip_prefix(&format!("{{\"level\":\"{l}\",\"ts\":\"")))
    else {
        return false;
    };
    let (ts, rest) = rest.split_at(rest.len().min(24));
    let ts_ok = ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.';
    let caller = rest.strip_prefix("\",\"caller\":\"").and_then(|r| r.split_once("\",\"msg\":\""));
    let caller_ok = caller.is_some_and(|(c, _)| c.contains(".rs:") && !c.starts_with("crates/"));
    ts_ok && caller_ok && line.ends_with('}') && !line.chars().any(|c| c.is_control())
}

/// The value of the unlabelled series `name` in a scrape.
fn value(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_flags_metrics_and_health_on_every_client_url() {
    let root = std::env::temp_dir().join(format!("raftkv-etcdops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (c1, c2, peer) = (common::free_port(), common::free_port(), common::free_port());
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(root.with_extension("log")).unwrap();
    let member = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .arg("server")
        .args(["--name", "m1", "--data-dir"])
        .arg(&root)
        .args(["--listen-peer-urls", &peer_url, "--initial-cluster", &format!("m1={peer_url}")])
        .arg(format!("--listen-client-urls=http://127.0.0.1:{c1},http://127.0.0.1:{c2}"))
        .args(["--heartbeat-interval=50", "--election-timeout=500"])
        .args(["--max-txn-ops=2", "--max-request-bytes=4096"])
        .args(["--logger=zap", "--log-outputs=stderr", "--log-level=info", "--metrics=extensive"])
        .args(["--enable-v2=false", "--strict-reconfig-check", "--enable-pprof=false"])
        .args(["--client-cert-auth=false"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut member = Member(member);

    // Healthy (a leader) on the second client URL, over HTTP/1.1 next to gRPC.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = http_get(c2, "/health") {
            assert_eq!(body, "{\"health\":\"true\"}", "etcd's body, no newline");
            break;
        }
        let exited = member.0.try_wait().unwrap();
        assert!(exited.is_none(), "member exited: {exited:?}; log {}", root.display());
        assert!(Instant::now() < deadline, "no healthy answer on the client port in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, before) = http_get(c1, "/metrics").expect("metrics on the first client URL");
    assert_eq!(code, 200);
    for (name, kind) in ETCD_SERIES {
        assert!(before.contains(&format!("\n# TYPE {name} {kind}\n")), "{name} {kind}: {before}");
    }
    assert_eq!(value(&before, "etcd_server_has_leader"), Some(1.0), "{before}");
    assert_eq!(value(&before, "etcd_server_is_leader"), Some(1.0), "{before}");
    assert!(before.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} "));

    // gRPC on both URLs, with the lowered limits.
    let channel = |port: u16| client::channel(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let mut kv1 = pb::kv_client::KvClient::new(channel(c1));
    let mut kv2 = pb::kv_client::KvClient::new(channel(c2));
    fn put(k: &str, v: Vec<u8>) -> pb::PutRequest {
        pb::PutRequest { key: k.as_bytes().to_vec().into(), value: v.into(), ..Default::default() }
    }
    const PUTS: usize = 5;
    for i in 0..PUTS {
        let kv = if i % 2 == 0 { &mut kv1 } else { &mut kv2 };
        kv.put(put(&format!("k{i}"), b"v".to_vec())).await.expect("a put");
    }
    let e = kv1.put(put("big", vec![b'v'; 5000])).await.unwrap_err();
    assert_eq!(e.message(), "etcdserver: request is too large");
    let op = |k: &str| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(k, b"v".to_vec()))),
    };
    let txn = pb::TxnRequest { success: vec![op("a"), op("b"), op("c")], ..Default::default() };
    let e = kv2.txn(txn).await.unwrap_err();
    assert_eq!(e.message(), "etcdserver: too many operations in txn request");

    let (_, after) = http_get(c2, "/metrics").expect("metrics on the second client URL");
    let committed = |s: &str| value(s, "etcd_server_proposals_committed_total").unwrap();
    assert!(
        committed(&after) >= committed(&before) + PUTS as f64,
        "{PUTS} puts: committed {} then {}",
        committed(&before),
        committed(&after)
    );
    assert_eq!(value(&after, "etcd_server_quota_backend_bytes"), Some(2147483648.0));
    assert_eq!(value(&after, "etcd_server_proposals_pending"), Some(0.0));

    // etcd's gRPC series, which its standard alerts read: every call by method and code
    // (the refusals above are InvalidArgument, as etcd's), a stream the client drops as
    // Canceled. A call's code is recorded as its answer ends, so scrape until it shows.
    let mut watch = pb::watch_client::WatchClient::new(channel(c1));
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest { key: b"k0".to_vec().into(), ..Default::default() },
        )),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.unwrap();
    let rx = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut events = watch.watch(rx).await.unwrap().into_inner();
    assert!(events.message().await.unwrap().unwrap().created);
    drop(events);
    drop(tx);
    drop(watch);
    let handled = |s: &str, service: &str, method: &str, kind: &str, code: &str| {
        let labels = format!(
            "grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"etcdserverpb.{service}\",grpc_type=\"{kind}\""
        );
        value(s, &format!("grpc_server_handled_total{{{labels}}}"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (_, scrape) = http_get(c2, "/metrics").expect("metrics");
        if handled(&scrape, "Watch", "Watch", "bidi_stream", "Canceled").is_some() {
            break scrape;
        }
        assert!(Instant::now() < deadline, "no canceled watch counted in 10 s: {scrape}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(handled(&scrape, "KV", "Put", "unary", "OK"), Some(PUTS as f64), "{scrape}");
    assert_eq!(handled(&scrape, "KV", "Put", "unary", "InvalidArgument"), Some(1.0), "{scrape}");
    assert_eq!(handled(&scrape, "KV", "Txn", "unary", "InvalidArgument"), Some(1.0), "{scrape}");
    assert_eq!(handled(&scrape, "Watch", "Watch", "bidi_stream", "Canceled"), Some(1.0));
    let put_seconds = "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert_eq!(value(&scrape, put_seconds), Some(PUTS as f64 + 1.0), "{scrape}");

    // `--logger=zap`: every line etcd's JSON, the default quota's with its field.
    drop(member);
    let logged = std::fs::read_to_string(root.with_extension("log")).unwrap();
    assert!(logged.lines().count() >= 3, "{logged}");
    for line in logged.lines() {
        assert!(is_zap_line(line), "not a zap line: {line}");
    }
    let quota = "\"msg\":\"enabled backend quota\",\"quota-bytes\":2147483648}";
    assert!(logged.lines().any(|l| l.ends_with(quota)), "{logged}");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(root.with_extension("log"));
}

#[test]
fn a_config_file_with_bad_keys_names_every_one_and_the_member_does_not_start() {
    let path = std::env::temp_dir().join(format!("raftkv-etcdops-{}.yml", std::process::id()));
    let text = "name: m1\ndata-dir: /nonexistent/m1\nsnap-dir: x\nwal-dir:\n\
        initial-cluster: m1=http://127.0.0.1:1\nbogus: 1\nproxy: 'on'\nlog-outputs: [stderr]\n";
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["server", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 3: unknown key \"snap-dir\""), "{stderr}");
    assert!(stderr.contains("line 6: unknown key \"bogus\""), "{stderr}");
    assert!(stderr.contains("line 7: key \"proxy\" is \"on\""), "{stderr}");
    assert!(!stderr.contains("line 4") && !stderr.contains("line 8"), "{stderr}");
}

/// `name{To="<peer>"}`'s value in `scrape`, `peer` a member id.
fn to_peer(scrape: &str, name: &str, peer: u64) -> Option<f64> {
    value(scrape, &format!("{name}{{To=\"{peer:x}\"}}"))
}

/// Member `i`'s scrape of its metrics listener (empty if it does not answer).
fn scrape(c: &TestCluster, i: usize) -> String {
    c.http_get(i, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

const RTT: &str = "etcd_network_peer_round_trip_time_seconds";
const FAILURES: &str = "etcd_network_peer_sent_failures_total";

/// Whether `s` has both per-peer series to `peer`, round trips sampled in etcd's buckets,
/// at least one of plausible size (loopback: under 0.82 s; not an average, which the first
/// probe, made while the peer may still be starting, can dominate on a loaded machine).
fn has_peer_series(s: &str, peer: u64) -> bool {
    let bucket = |le: &str| format!("{RTT}_bucket{{To=\"{peer:x}\",le=\"{le}\"}}");
    let fast = value(s, &bucket("0.8192")).unwrap_or(0.0);
    let top = format!("{} ", bucket("3.2768"));
    fast > 0.0 && s.contains(&top) && to_peer(s, FAILURES, peer).is_some()
}

/// The etcd mixin's `etcdMembersDown` and `etcdMemberCommunicationSlow` read
/// `etcd_network_peer_sent_failures_total` and `etcd_network_peer_round_trip_time_seconds`
/// by `To`. On a real 3-member cluster: every member has both for each of its peers, named
/// by the peer's id, with round trips sampled; the leader's failures to a member rise once
/// that member is killed while writes go on; once `etcdctl member remove` removed it, no
/// member shows a series `To` it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_mixins_peer_series_name_each_peer_and_leave_with_a_removed_member() {
    if !common::have("etcdctl", "version") {
        eprintln!("skipped: no etcdctl on PATH");
        return;
    }
    let mut c = TestCluster::start("mixin-peers", &[]);
    c.wait_ready().await;
    let mut client = c.client();
    let mut ids = Vec::new();
    for i in 0..3 {
        let status = client.status(i).await.expect("status");
        ids.push(status.header.expect("a header").member_id);
    }

    // Every member, every peer (and no series to itself).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrapes: Vec<String> = (0..3).map(|i| scrape(&c, i)).collect();
        let each =
            |i: usize| (0..3).filter(|&j| j != i).all(|j| has_peer_series(&scrapes[i], ids[j]));
        if (0..3).all(each) {
            assert!(to_peer(&scrapes[0], FAILURES, ids[0]).is_none(), "{}", scrapes[0]);
            break;
        }
        assert!(Instant::now() < deadline, "peer series missing after 30 s: {scrapes:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A follower killed while writes go on: the leader's sends to it fail.
    let leader = c.leader().await;
    let victim = (leader + 1) % 3;
    let before = to_peer(&scrape(&c, leader), FAILURES, ids[victim]).expect("the series");
    c.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        client.put(format!("k{n}").as_bytes(), b"v").await.expect("a put, two members up");
        let s = scrape(&c, leader);
        if to_peer(&s, FAILURES, ids[victim]).is_some_and(|now| now > before) {
            break;
        }
        assert!(Instant::now() < deadline, "no failed send counted in 30 s (was {before}): {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Removed: its series are gone from both members left; the other peer's stay.
    let endpoints: Vec<String> = (0..3).filter(|&i| i != victim).map(|i| c.address(i)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let removed = common::etcdctl()
            .args(["--endpoints", &endpoints.join(","), "--command-timeout=15s"])
            .args(["member", "remove", &format!("{:x}", ids[victim])])
            .output()
            .expect("running etcdctl");
        let said = String::from_utf8_lossy(&removed.stderr);
        if removed.status.success() {
            break;
        }
        // etcd's rule: not until the leader has been connected to every voter left for 5 s
        // ("unhealthy cluster"); on a loaded machine a timeout or an election too.
        assert!(Instant::now() < deadline, "member remove failed for 30 s: {said}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = format!("To=\"{:x}\"", ids[victim]);
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in (0..3).filter(|&i| i != victim) {
        let other = ids[3 - i - victim];
        loop {
            let s = scrape(&c, i);
            if !s.contains(&gone) && has_peer_series(&s, other) {
                break;
            }
            assert!(Instant::now() < deadline, "member {i} still shows {gone} after 30 s: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
