//! Watch and Lease on real 3-member clusters (real processes, `kill -9`):
//!
//! - a watch opened before the leader is killed sees every later event exactly once,
//!   in order, by resuming on another member from its last revision + 1;
//! - an expired lease's keys disappear on every member at the same revision;
//! - keep-alives (through a follower, forwarded to the leader) keep a lease alive;
//! - etcdctl's watch and lease commands work against raftkv (skipped, with a message,
//!   when etcdctl is not installed).

mod common;

use common::{retry, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::watch_client::WatchClient;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

/// The tests here each run a 3-member cluster and assert on exact behaviour (no leader
/// change mid-test); run them one at a time so they do not starve each other of CPU on a
/// small machine and cause spurious elections.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Elections after 1-2 s (and so a lease TTL of at least 2 s), frequent snapshots.
const SERVER_FLAGS: &[&str] = &["--tick-ms", "50", "--snapshot-count", "50"];

async fn channel(endpoint: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy()
}

/// What a watcher saw: (key, revision, is_delete).
type Seen = (String, i64, bool);

fn seen(e: &proto::mvccpb::Event) -> Seen {
    let kv = e.kv.as_ref().unwrap();
    (String::from_utf8(kv.key.to_vec()).unwrap(), kv.mod_revision, e.r#type == 1)
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    client::prefix_end(prefix.as_bytes())
}

/// Watches `prefix` from `start` (0: now) on `endpoint` until `until` returns true for
/// the events so far or the stream fails; returns the events and whether it finished.
/// `on_created`, if still there, is told once the server created the watch (every write
/// after that is seen).
async fn watch_once(
    endpoint: &str,
    prefix: &str,
    start: i64,
    seen_so_far: &mut Vec<Seen>,
    next_revision: &mut i64,
    until: &(dyn Fn(&[Seen]) -> bool + Sync),
    on_created: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> bool {
    let mut client = WatchClient::new(channel(endpoint).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: prefix.as_bytes().to_vec().into(),
                range_end: prefix_end(prefix).into(),
                start_revision: start,
                ..Default::default()
            },
        )),
    };
    tx.send(create).await.unwrap();
    let Ok(response) = client.watch(ReceiverStream::new(rx)).await else { return false };
    let mut stream = response.into_inner();
    let mut created = false;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let Ok(Ok(Some(r))) = msg else { return false };
        if r.created {
            assert!(!created, "one created response");
            assert!(!r.canceled, "watch refused: {}", r.cancel_reason);
            created = true;
            if let Some(tx) = on_created.take() {
                let _ = tx.send(());
            }
            if *next_revision == 0 {
                *next_revision =
                    if start > 0 { start } else { r.header.as_ref().unwrap().revision + 1 };
            }
            continue;
        }
        assert!(created, "created comes before any event");
        assert!(!r.canceled, "watch canceled: {r:?}");
        let mut floor = *next_revision;
        for e in &r.events {
            let s = seen(e);
            assert!(s.1 >= floor, "event {s:?} below revision {floor}: out of order or again");
            floor = s.1;
            *next_revision = s.1 + 1;
            seen_so_far.push(s);
        }
        // A revision is never split over responses: the next one starts after it.
        if until(seen_so_far) {
            drop(tx);
            return true;
        }
    }
}

/// A watcher that survives member failures: on a stream error it resumes on the next
/// member from its last revision + 1, as etcd clients do. `created` is told when its
/// first watch is created.
async fn resilient_watch(
    endpoints: Vec<String>,
    first: usize,
    prefix: &'static str,
    until: impl Fn(&[Seen]) -> bool + Sync,
    created: tokio::sync::oneshot::Sender<()>,
) -> Vec<Seen> {
    let mut created = Some(created);
    let mut seen = Vec::new();
    let mut next_revision = 0i64;
    let mut i = first;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut reconnects = 0;
    while Instant::now() < deadline {
        let start = next_revision;
        let ep = &endpoints[i];
        if watch_once(ep, prefix, start, &mut seen, &mut next_revision, &until, &mut created).await
        {
            eprintln!("watcher done after {reconnects} reconnects");
            return seen;
        }
        reconnects += 1;
        i = (i + 1) % endpoints.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("watcher did not finish: saw {} events", seen.len());
}

/// Every event of `prefix` in the history, read in one go from `endpoint`.
async fn history(endpoint: &str, prefix: &'static str, last_revision: i64) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut next = 0;
    let until = move |s: &[Seen]| s.last().is_some_and(|e| e.1 >= last_revision);
    assert!(watch_once(endpoint, prefix, 1, &mut seen, &mut next, &until, &mut None).await);
    seen
}

/// The watch is opened on the leader before it is killed (`kill -9`); writes go on
/// before, during and after the election. The watcher reconnects to another member
/// and resumes from its last revision + 1: it must see exactly the committed events —
/// each once, in revision order, none missing — as the surviving history has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_event_exactly_once_across_a_leader_kill() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    const PER_PHASE: usize = 25;
    let mut cluster = TestCluster::start("watch-kill", SERVER_FLAGS);
    let leader = cluster.leader().await;
    let endpoints = cluster.endpoints();
    let mut writer = cluster.client();
    writer.put(b"other", b"not watched").await.unwrap();

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let total = 3 * PER_PHASE;
    let watcher = tokio::spawn(async move {
        resilient_watch(endpoints, leader, "w/", move |s| s.len() >= total, ready_tx).await
    });
    // Writes start once the watch exists (its start revision is then before them).
    tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .expect("the watch is created within 20 s")
        .expect("the watcher reports its watch created");

    let mut acked = Vec::new();
    let put = |n: usize| format!("w/{n:03}");
    for n in 0..PER_PHASE {
        writer.put(put(n).as_bytes(), b"before").await.unwrap();
        acked.push(put(n));
    }
    // Kill the leader; the writer keeps going (its client follows the new leader, and
    // its session keeps retried writes exactly-once).
    cluster.kill(leader);
    for n in PER_PHASE..3 * PER_PHASE {
        let phase = if n < 2 * PER_PHASE { "during" } else { "after" };
        writer.put(put(n).as_bytes(), phase.as_bytes()).await.unwrap();
        acked.push(put(n));
    }
    let seen = tokio::time::timeout(Duration::from_secs(120), watcher).await.unwrap().unwrap();

    let survivor = (leader + 1) % 3;
    let last = seen.last().unwrap().1;
    let truth = history(&cluster.endpoint(survivor), "w/", last).await;
    assert_eq!(seen, truth, "the watcher saw exactly the committed history");
    let keys: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(keys, acked, "each write once, in the order written");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "revisions strictly increase");
    assert!(seen.iter().all(|s| !s.2));
    cluster.spawn(leader);
}

async fn lease_client(endpoint: &str) -> LeaseClient<Channel> {
    LeaseClient::new(channel(endpoint).await)
}

async fn put_leased(endpoint: &str, key: &str, lease: i64) -> Result<i64, tonic::Status> {
    let mut kv = KvClient::new(channel(endpoint).await);
    let req = pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        lease,
        ..Default::default()
    };
    Ok(kv.put(req).await?.into_inner().header.unwrap().revision)
}

async fn local_get(endpoint: &str, key: &str) -> (Option<pb::RangeResponse>, bool) {
    let mut kv = KvClient::new(channel(endpoint).await);
    let req = pb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        serializable: true,
        ..Default::default()
    };
    match kv.range(req).await {
        Ok(r) => {
            let r = r.into_inner();
            let present = !r.kvs.is_empty();
            (Some(r), present)
        }
        Err(_) => (None, false),
    }
}

/// Lease errors with etcd's codes and messages; expiry deletes the attached keys on
/// every member at one revision; keep-alives through a follower keep a lease alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_everywhere_at_one_revision_unless_kept_alive() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("lease", SERVER_FLAGS);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let (ep_leader, ep_follower) = (cluster.endpoint(leader), cluster.endpoint(follower));
    let mut lease = lease_client(&ep_follower).await;

    // etcd's errors.
    let e = retry!(put_leased(&ep_follower, "nolease", 12345)).unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "etcdserver: requested lease not found"));
    let g = retry!(lease.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 777 })).unwrap();
    assert_eq!((g.get_ref().id, g.get_ref().ttl), (777, 60));
    let e = retry!(lease.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 777 })).unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "etcdserver: lease already exists")
    );
    let e = retry!(lease.lease_revoke(pb::LeaseRevokeRequest { id: 4242 })).unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "etcdserver: requested lease not found"));
    let ttl =
        retry!(lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 4242, keys: false }));
    assert_eq!(ttl.unwrap().get_ref().ttl, -1, "unknown lease: TTL -1, as etcd");
    retry!(lease.lease_revoke(pb::LeaseRevokeRequest { id: 777 })).unwrap();

    // (b) Expiry: three keys on a 2 s lease, one key without; nobody keeps it alive.
    let granted_at = Instant::now();
    let doomed = retry!(lease.lease_grant(pb::LeaseGrantRequest { ttl: 2, id: 0 })).unwrap();
    let doomed = doomed.into_inner().id;
    assert_ne!(doomed, 0);
    let mut last_put = 0;
    for key in ["exp/a", "exp/b", "exp/c"] {
        last_put = retry!(put_leased(&ep_follower, key, doomed)).unwrap();
    }
    retry!(put_leased(&ep_leader, "exp/keep", 0)).unwrap();
    // (c) A kept-alive lease of the same TTL, renewed through a follower.
    let kept = retry!(lease.lease_grant(pb::LeaseGrantRequest { ttl: 2, id: 0 })).unwrap();
    let kept = kept.into_inner().id;
    retry!(put_leased(&ep_leader, "alive/k", kept)).unwrap();
    let (ka_tx, ka_rx) = tokio::sync::mpsc::channel(4);
    let mut keep_alive = lease_client(&ep_follower)
        .await
        .lease_keep_alive(ReceiverStream::new(ka_rx))
        .await
        .unwrap()
        .into_inner();
    let listed = lease.lease_leases(pb::LeaseLeasesRequest {}).await.unwrap().into_inner();
    let mut ids: Vec<i64> = listed.leases.iter().map(|l| l.id).collect();
    ids.sort();
    let mut want = vec![doomed, kept];
    want.sort();
    assert_eq!(ids, want);

    let mut gone_at = None;
    while granted_at.elapsed() < Duration::from_secs(6) {
        ka_tx.send(pb::LeaseKeepAliveRequest { id: kept }).await.unwrap();
        let r = common::next_message("keep-alive", &mut keep_alive).await.unwrap();
        assert_eq!((r.id, r.ttl), (kept, 2), "keep-alive answers the granted TTL");
        if gone_at.is_none() && !local_get(&ep_leader, "exp/a").await.1 {
            gone_at = Some(granted_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let gone_at = gone_at.expect("the lease expired");
    assert!(gone_at >= Duration::from_secs(2), "not before its TTL: {gone_at:?}");
    eprintln!("lease of 2 s expired after {gone_at:?}");

    // Every member deleted the same keys at the same revision.
    let mut revisions = Vec::new();
    for i in 0..3 {
        let ep = cluster.endpoint(i);
        let deadline = Instant::now() + Duration::from_secs(10);
        while local_get(&ep, "exp/c").await.1 {
            assert!(Instant::now() < deadline, "member {i} still has the expired keys");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(local_get(&ep, "exp/keep").await.1, "the unleased key stays on member {i}");
        assert!(local_get(&ep, "alive/k").await.1, "the kept-alive key stays on member {i}");
        let mut events = Vec::new();
        let mut next = 0;
        let until = |s: &[Seen]| s.iter().filter(|e| e.2).count() >= 3;
        let from = last_put + 1;
        assert!(watch_once(&ep, "exp/", from, &mut events, &mut next, &until, &mut None).await);
        let deletes: Vec<&Seen> = events.iter().filter(|e| e.2).collect();
        let keys: Vec<&str> = deletes.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, ["exp/a", "exp/b", "exp/c"]);
        assert!(deletes.iter().all(|e| e.1 == deletes[0].1), "one revision: {deletes:?}");
        revisions.push(deletes[0].1);
    }
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "same revision everywhere: {revisions:?}"
    );
    let ttl = lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: doomed, keys: true });
    assert_eq!(ttl.await.unwrap().get_ref().ttl, -1);

    // The kept lease outlived its TTL three times over, and reports its keys.
    let t = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: kept, keys: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.granted_ttl, 2);
    assert!(t.ttl >= 1 && t.ttl <= 2, "remaining TTL {}", t.ttl);
    assert_eq!(t.keys, vec![bytes::Bytes::from_static(b"alive/k")]);
    // Stop renewing: it expires too, and a keep-alive then answers TTL 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    while local_get(&ep_leader, "alive/k").await.1 {
        assert!(Instant::now() < deadline, "the lease expires once no longer renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ka_tx.send(pb::LeaseKeepAliveRequest { id: kept }).await.unwrap();
    let expired = common::next_message("keep-alive", &mut keep_alive).await.unwrap();
    assert_eq!(expired.ttl, 0);

    // A watch on a compacted revision is refused as etcd does: created, then canceled
    // with `compact_revision` set.
    let mut kv = KvClient::new(channel(&ep_follower).await);
    let rev = retry!(put_leased(&ep_follower, "exp/last", 0)).unwrap();
    kv.compact(pb::CompactionRequest { revision: rev, physical: false }).await.unwrap();
    let mut watch = WatchClient::new(channel(&ep_follower).await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"exp/".to_vec().into(),
                start_revision: 2,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = watch.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let created = common::next_message("watch created", &mut stream).await.unwrap();
    assert!(created.created && !created.canceled);
    let canceled = common::next_message("watch canceled", &mut stream).await.unwrap();
    assert!(canceled.canceled, "{canceled:?}");
    assert_eq!((canceled.watch_id, canceled.compact_revision), (created.watch_id, rev));
}

/// etcdctl 3.4 against raftkv: lease grant / put --lease / keep-alive --once /
/// timetolive --keys / list / revoke, and a historic watch. Skipped (with a message)
/// when etcdctl is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_and_lease_commands_work() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let etcdctl = std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    if Command::new(&etcdctl).arg("version").output().is_err() {
        eprintln!(
            "SKIPPED etcdctl_watch_and_lease_commands_work: etcdctl not found \
             (apt-get install -y etcd-client, or set ETCDCTL)"
        );
        return;
    }
    let cluster = TestCluster::start("etcdctl-watch", SERVER_FLAGS);
    cluster.leader().await;
    let endpoints = cluster.endpoints().join(",");
    let ctl = |args: &[&str]| -> String {
        let out = Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };

    // Lease commands.
    let granted = ctl(&["lease", "grant", "60"]);
    // "lease 000000000000000c granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).expect("lease id").to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    ctl(&["put", "--lease", &id, "ctl/leased", "v"]);
    let once = ctl(&["lease", "keep-alive", "--once", &id]);
    assert!(once.contains("keepalived with TTL(60)"), "{once}");
    let ttl = ctl(&["lease", "timetolive", "--keys", &id]);
    assert!(ttl.contains("granted with TTL(60s)") && ttl.contains("ctl/leased"), "{ttl}");
    let list = ctl(&["lease", "list"]);
    assert!(list.contains("found 1 leases") && list.contains(&id), "{list}");

    // Watch: a historic watch prints the events since a revision.
    let first = ctl(&["put", "ctl/w", "1"]);
    assert!(first.contains("OK"));
    ctl(&["put", "ctl/w", "2"]);
    ctl(&["del", "ctl/w"]);
    let rev = {
        let out = ctl(&["get", "ctl/leased", "-w", "json"]);
        let at = out.find("\"revision\":").unwrap() + "\"revision\":".len();
        out[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>()
    };
    let rev: i64 = rev.parse().unwrap();
    let mut watch = Command::new(&etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["watch", "--prefix", "ctl/w", "--rev", &(rev - 2).to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Three events of three lines each are expected: wait for them, then stop etcdctl
    // and take whatever else it printed too.
    let stdout = watch.stdout.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = line_tx.send(line.unwrap());
        }
    });
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < 9 {
        match tokio::time::timeout_at(deadline, line_rx.recv()).await {
            Ok(Some(line)) => out.push(line),
            _ => break,
        }
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    reader.join().unwrap();
    while let Ok(line) = line_rx.try_recv() {
        out.push(line);
    }
    assert_eq!(
        out,
        ["PUT", "ctl/w", "1", "PUT", "ctl/w", "2", "DELETE", "ctl/w", ""],
        "etcdctl watch output"
    );

    // Revoking deletes the leased key.
    let revoked = ctl(&["lease", "revoke", &id]);
    assert!(revoked.contains("revoked"), "{revoked}");
    assert_eq!(ctl(&["get", "ctl/leased"]), "");
}
