//! Backup and restore on real processes, as an etcd operator does it:
//!
//! 1. write keys (overwrites, deletes, a lease, a compaction) to a 3-member cluster;
//! 2. save a snapshot with `raftkv snapshot save` and with `etcdctl snapshot save`
//!    (etcd's own tool; skipped, with a message, when it is not installed);
//! 3. damaged, truncated and foreign files are refused with an error naming the file;
//! 4. `raftkv snapshot restore` writes three new data dirs, `raftkv server` starts a new
//!    cluster (new ids) from them, and it holds every key with its value, revisions,
//!    version and lease, the same revision and history, and takes new writes;
//! 5. every member of the new cluster lists every member's client URLs.

use proto::etcdserverpb as pb;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Retries a call while the cluster answers `Unavailable` (an election, or a new leader
/// whose lease clock has not started yet), as etcd's clients do; other answers are
/// returned for the test to check.
macro_rules! retry {
    ($call:expr) => {{
        let mut tries = 0;
        loop {
            match $call.await {
                Err(s) if s.code() == tonic::Code::Unavailable && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
    }};
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A cluster's names and ports, fixed before any member starts (a restore needs them).
struct Plan {
    names: Vec<String>,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
    initial_cluster: String,
}

impl Plan {
    fn new(prefix: &str) -> Plan {
        let names: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}")).collect();
        let peer_ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let client_ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let initial_cluster = names
            .iter()
            .zip(&peer_ports)
            .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        Plan { names, peer_ports, client_ports, initial_cluster }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    /// Starts every member on `data_dirs[i]`.
    fn start(&self, data_dirs: &[PathBuf], logs: &Path) -> Running {
        let mut children = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
                .args(["server", "--name", name])
                .arg("--data-dir")
                .arg(&data_dirs[i])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", self.peer_ports[i])])
                .args(["--listen-client-urls", &self.endpoint(i)])
                .args(["--initial-cluster", &self.initial_cluster])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting raftkv server");
            children.push(child);
        }
        Running(children)
    }
}

/// Member processes, killed on drop.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string()).unwrap().connect_lazy()
}

/// Waits until every member answers a linearizable read (a leader, and all applied).
async fn wait_ready(plan: &Plan) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..plan.names.len() {
        let mut kv = KvClient::new(channel(&plan.endpoint(i)).await);
        loop {
            let probe = pb::RangeRequest { key: "ready".into(), ..Default::default() };
            if kv.range(probe).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "member {} not ready within 30 s", plan.names[i]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every key with all its fields, at a linearizable read, and the response header.
async fn everything(
    endpoint: &str,
    revision: i64,
) -> (Vec<proto::mvccpb::KeyValue>, pb::ResponseHeader) {
    let mut kv = KvClient::new(channel(endpoint).await);
    let all = pb::RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        revision,
        ..Default::default()
    };
    let r = retry!(kv.range(all.clone())).expect("range").into_inner();
    (r.kvs, r.header.unwrap())
}

fn raftkv(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn have_etcdctl() -> bool {
    Command::new("etcdctl").arg("version").output().is_ok_and(|o| o.status.success())
}

/// Writes a history with overwrites, deletes, a lease and a compaction; returns the
/// lease id and the compact revision.
async fn write_history(endpoint: &str) -> (i64, i64) {
    let ch = channel(endpoint).await;
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);
    let put = |key: String, value: String, lease: i64| pb::PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    };
    for i in 0..200 {
        retry!(kv.put(put(format!("key/{i:03}"), format!("value {i}"), 0))).unwrap();
    }
    for i in (0..200).step_by(3) {
        retry!(kv.put(put(format!("key/{i:03}"), format!("second value {i}"), 0))).unwrap();
    }
    let compact_at = retry!(kv.put(put("marker".into(), "m".into(), 0))).unwrap();
    let compact_at = compact_at.into_inner().header.unwrap().revision;
    for i in (0..200).step_by(7) {
        let del =
            pb::DeleteRangeRequest { key: format!("key/{i:03}").into(), ..Default::default() };
        retry!(kv.delete_range(del.clone())).unwrap();
    }
    let granted = retry!(lease.lease_grant(pb::LeaseGrantRequest { ttl: 3600, id: 0 })).unwrap();
    let lease_id = granted.into_inner().id;
    retry!(kv.put(put("leased".into(), "l".into(), lease_id))).unwrap();
    retry!(kv.compact(pb::CompactionRequest { revision: compact_at, physical: true })).unwrap();
    retry!(kv.put(put("key/000".into(), "after the compaction".into(), 0))).unwrap();
    (lease_id, compact_at)
}

/// Damaged, truncated and foreign files: `status` and `restore` refuse them with an
/// error naming the file, and a refused restore writes nothing.
fn check_bad_files(good: &Path, dir: &Path, initial_cluster: &str) {
    let bytes = std::fs::read(good).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped.db", flipped, "sha256 mismatch"),
        ("truncated.db", bytes[..bytes.len() - 100].to_vec(), "truncated"),
        ("garbage.db", vec![b'x'; 4096], "not a raftkv snapshot"),
        ("empty.db", Vec::new(), "too short"),
    ];
    for (name, content, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let p = path.to_str().unwrap();
        let (ok, _, err) = raftkv(&["snapshot", "status", p]);
        assert!(!ok && err.contains(want) && err.contains(name), "status {name}: {err}");
        let target = dir.join(format!("{name}.restored"));
        let (ok, _, err) = raftkv(&[
            "snapshot",
            "restore",
            p,
            "--name",
            "r1",
            "--initial-cluster",
            initial_cluster,
            "--data-dir",
            target.to_str().unwrap(),
        ]);
        assert!(!ok && err.contains(want) && err.contains(name), "restore {name}: {err}");
        assert!(!target.exists(), "a refused restore writes nothing");
    }
    let (ok, _, err) = raftkv(&["snapshot", "status", dir.join("missing.db").to_str().unwrap()]);
    assert!(!ok && err.contains("missing.db"), "{err}");
}

/// The raw stream, as etcd frames it: chunks whose `remaining_bytes` count down to 0,
/// then the 32-byte sha256 (also with 0); every header names the member, the cluster and
/// the snapshot's revision.
async fn check_stream(endpoint: &str, file: &[u8], at: &pb::ResponseHeader) {
    let mut m = MaintenanceClient::new(channel(endpoint).await);
    let mut stream = m.snapshot(pb::SnapshotRequest {}).await.unwrap().into_inner();
    let mut got = Vec::new();
    let mut remaining = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        let h = chunk.header.expect("a header");
        assert_eq!(
            (h.cluster_id, h.member_id, h.revision),
            (at.cluster_id, at.member_id, at.revision)
        );
        got.extend_from_slice(&chunk.blob);
        remaining.push(chunk.remaining_bytes);
    }
    assert_eq!(got, file, "the stream is the file");
    let content = (file.len() - 32) as u64;
    assert_eq!(remaining.last(), Some(&0), "the hash comes with 0 remaining");
    assert_eq!(remaining[remaining.len() - 2], 0, "the last content chunk leaves 0");
    assert!(remaining.windows(2).all(|w| w[0] >= w[1]) && remaining[0] < content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_restores_into_a_new_cluster_with_all_its_data() {
    let root = std::env::temp_dir().join(format!("raftkv-snapshot-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    // 1. The old cluster and its history.
    let old = Plan::new("o");
    let old_dirs: Vec<PathBuf> = old.names.iter().map(|n| root.join(n)).collect();
    let running = old.start(&old_dirs, &root);
    wait_ready(&old).await;
    let (lease_id, compact_at) = write_history(&old.endpoint(0)).await;
    // A linearizable read on the member we save from: it has applied every write.
    let (kvs, old_header) = everything(&old.endpoint(1), 0).await;
    let revision = old_header.revision;
    let (past_kvs, _) = everything(&old.endpoint(1), compact_at + 1).await;
    // 200 keys, 29 deleted, key/000 put again, plus `marker` and `leased`.
    assert_eq!(kvs.len(), 200 - 29 + 1 + 2);

    // 2. Save, with our CLI and with etcd's.
    let ours = root.join("raftkv.db");
    let (ok, out, err) =
        raftkv(&["snapshot", "save", ours.to_str().unwrap(), "--endpoints", &old.endpoint(1)]);
    assert!(ok, "raftkv snapshot save: {err}");
    assert_eq!(out.trim(), format!("Snapshot saved at {}", ours.display()));
    assert!(!root.join("raftkv.db.part").exists());
    let bytes = std::fs::read(&ours).unwrap();
    assert_eq!(bytes.len() % 512, 32, "etcd's framing: whole 512-byte blocks, then the sha256");
    let mut restore_from = ours.clone();
    if have_etcdctl() {
        let theirs = root.join("etcdctl.db");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &old.endpoint(1), "snapshot", "save"])
            .arg(&theirs)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "etcdctl snapshot save: {out:?}");
        assert_eq!(stdout.trim(), format!("Snapshot saved at {}", theirs.display()));
        // Nothing was written in between: the same state, byte for byte.
        assert_eq!(std::fs::read(&theirs).unwrap(), bytes, "etcdctl saved the same stream");
        restore_from = theirs;
    } else {
        println!("*** etcdctl not installed: `etcdctl snapshot save` not checked ***");
    }
    check_stream(&old.endpoint(1), &bytes, &old_header).await;
    drop(running);

    let (ok, out, err) = raftkv(&["snapshot", "status", restore_from.to_str().unwrap()]);
    assert!(ok, "{err}");
    let fields: Vec<&str> = out.trim().split(", ").collect();
    assert_eq!(fields.len(), 4, "hash, revision, keys, size: {out}");
    assert_eq!(fields[1..3], [revision.to_string(), kvs.len().to_string()]);

    // 3. Bad files.
    let new = Plan::new("r");
    check_bad_files(&restore_from, &root, &new.initial_cluster);

    // 4. Restore into a new cluster.
    let new_dirs: Vec<PathBuf> = new.names.iter().map(|n| root.join(format!("new-{n}"))).collect();
    for (i, name) in new.names.iter().enumerate() {
        let peer = format!("http://127.0.0.1:{}", new.peer_ports[i]);
        let (ok, out, err) = raftkv(&[
            "snapshot",
            "restore",
            restore_from.to_str().unwrap(),
            "--name",
            name,
            "--initial-cluster",
            &new.initial_cluster,
            "--initial-advertise-peer-urls",
            &peer,
            "--data-dir",
            new_dirs[i].to_str().unwrap(),
        ]);
        assert!(ok, "restore {name}: {err}");
        assert!(out.contains(&format!("revision {revision}")), "{out}");
    }
    let (ok, _, err) = raftkv(&[
        "snapshot",
        "restore",
        restore_from.to_str().unwrap(),
        "--name",
        "r1",
        "--initial-cluster",
        &new.initial_cluster,
        "--data-dir",
        new_dirs[0].to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not empty"), "restoring over a data dir is refused: {err}");

    let _running = new.start(&new_dirs, &root);
    wait_ready(&new).await;
    for i in 0..3 {
        let (got, got_header) = everything(&new.endpoint(i), 0).await;
        assert_eq!(got_header.revision, revision, "member {i} has the saved revision");
        assert_ne!(got_header.cluster_id, old_header.cluster_id, "a new cluster");
        assert_eq!(got, kvs, "member {i} has every key with its revisions, version and lease");
    }
    let (got_past, _) = everything(&new.endpoint(2), compact_at + 1).await;
    assert_eq!(got_past, past_kvs, "history after the compaction is kept");
    let mut kv = KvClient::new(channel(&new.endpoint(2)).await);
    let below =
        pb::RangeRequest { key: "marker".into(), revision: compact_at - 1, ..Default::default() };
    let e = retry!(kv.range(below.clone())).unwrap_err();
    assert!(e.message().contains("compacted"), "the compaction is kept: {e:?}");
    let mut lease = LeaseClient::new(channel(&new.endpoint(0)).await);
    let ttl = pb::LeaseTimeToLiveRequest { id: lease_id, keys: true };
    let ttl = retry!(lease.lease_time_to_live(ttl)).unwrap().into_inner();
    assert_eq!((ttl.granted_ttl, ttl.keys), (3600, vec![bytes::Bytes::from("leased")]));

    // New writes continue the revision sequence.
    let put = pb::PutRequest { key: "new".into(), value: "write".into(), ..Default::default() };
    let r = retry!(kv.put(put.clone())).unwrap().into_inner();
    let header = r.header.unwrap();
    assert_eq!(header.revision, revision + 1);

    // 5. A new cluster (new ids), whose members all list every client URL.
    let mut cluster = ClusterClient::new(channel(&new.endpoint(1)).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = cluster.member_list(pb::MemberListRequest::default()).await;
        let list = list.unwrap().into_inner();
        assert_eq!(list.header.unwrap().cluster_id, header.cluster_id);
        let mut urls: Vec<Vec<String>> =
            list.members.iter().map(|m| m.client_ur_ls.clone()).collect();
        urls.sort();
        let mut want: Vec<Vec<String>> = (0..3).map(|i| vec![new.endpoint(i)]).collect();
        want.sort();
        if urls == want {
            break;
        }
        assert!(Instant::now() < deadline, "member list client URLs: {urls:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(_running);
    let _ = std::fs::remove_dir_all(&root);
}
