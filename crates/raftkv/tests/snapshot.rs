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

mod common;

use common::{raftkv, retry, ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::auth_client::AuthClient;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Every key with all its fields, at a linearizable read, and the response header.
async fn everything(
    channel: Channel,
    revision: i64,
) -> (Vec<proto::mvccpb::KeyValue>, pb::ResponseHeader) {
    let mut kv = KvClient::new(channel);
    let all = pb::RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        revision,
        ..Default::default()
    };
    let r = retry!(kv.range(all.clone())).expect("range").into_inner();
    (r.kvs, r.header.unwrap())
}

/// Writes a history with overwrites, deletes, a lease and a compaction; returns the
/// lease id and the compact revision.
async fn write_history(ch: Channel) -> (i64, i64) {
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
        ("garbage.db", vec![b'x'; 4096], "no SHA-256"),
        ("empty.db", Vec::new(), "no SHA-256"),
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
async fn check_stream(channel: Channel, file: &[u8], at: &pb::ResponseHeader) {
    let mut m = MaintenanceClient::new(channel);
    let mut stream = m.snapshot(pb::SnapshotRequest {}).await.unwrap().into_inner();
    let mut got = Vec::new();
    let mut remaining = Vec::new();
    while let Some(chunk) = common::next_message("snapshot stream", &mut stream).await {
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
    // 1. The old cluster and its history. Its root dir also holds the snapshot files.
    let mut old = TestCluster::start_spec(ClusterSpec::raftkv("snapshot-old", &[]).named("o"));
    old.wait_ready().await;
    let root = old.root().to_path_buf();
    let (lease_id, compact_at) = write_history(old.channel(0)).await;
    // Auth state (users, roles) rides in the snapshot too; auth stays off.
    let mut auth = AuthClient::new(old.channel(0));
    let user = pb::AuthUserAddRequest {
        name: "keeper".into(),
        password: "pw".into(),
        ..Default::default()
    };
    retry!(auth.user_add(user.clone())).unwrap();
    retry!(auth.role_add(pb::AuthRoleAddRequest { name: "kept".into() })).unwrap();
    let grant = pb::AuthUserGrantRoleRequest { user: "keeper".into(), role: "kept".into() };
    retry!(auth.user_grant_role(grant.clone())).unwrap();
    // A linearizable read on the member we save from: it has applied every write.
    let (kvs, old_header) = everything(old.channel(1), 0).await;
    let revision = old_header.revision;
    let (past_kvs, _) = everything(old.channel(1), compact_at + 1).await;
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
    if common::have("etcdctl", "version") {
        let theirs = root.join("etcdctl.db");
        let out = common::etcdctl()
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
    check_stream(old.channel(1), &bytes, &old_header).await;
    old.kill_all();

    let (ok, out, err) = raftkv(&["snapshot", "status", restore_from.to_str().unwrap()]);
    assert!(ok, "{err}");
    let fields: Vec<&str> = out.trim().split(", ").collect();
    assert_eq!(fields.len(), 4, "hash, revision, keys, size: {out}");
    assert_eq!(fields[1], revision.to_string());
    if common::have("etcdctl", "version") {
        // etcd's tool reads raftkv's snapshot, and says what ours says.
        let out = common::etcdctl().arg("snapshot").arg("status").arg(&restore_from).output();
        let out = out.unwrap();
        assert!(out.status.success(), "etcdctl snapshot status: {out:?}");
        let theirs = String::from_utf8_lossy(&out.stdout);
        let ours = raftkv(&["snapshot", "status", restore_from.to_str().unwrap()]).1;
        assert_eq!(theirs.trim(), ours.trim());
    }

    // 3. Bad files.
    let mut new = TestCluster::plan(ClusterSpec::raftkv("snapshot-new", &[]).named("r"));
    check_bad_files(&restore_from, &root, new.initial_cluster());

    // 4. Restore into a new cluster.
    for (i, member) in new.members().iter().enumerate() {
        let (ok, out, err) = raftkv(&[
            "snapshot",
            "restore",
            restore_from.to_str().unwrap(),
            "--name",
            &member.name,
            "--initial-cluster",
            new.initial_cluster(),
            "--initial-advertise-peer-urls",
            &new.peer_url(i),
            "--data-dir",
            member.dir.to_str().unwrap(),
        ]);
        assert!(ok, "restore {}: {err}", member.name);
        assert!(out.contains(&format!("revision {revision}")), "{out}");
    }
    let (ok, _, err) = raftkv(&[
        "snapshot",
        "restore",
        restore_from.to_str().unwrap(),
        "--name",
        "r1",
        "--initial-cluster",
        new.initial_cluster(),
        "--data-dir",
        new.members()[0].dir.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not empty"), "restoring over a data dir is refused: {err}");

    new.spawn_all();
    new.wait_ready().await;
    for i in 0..3 {
        let (got, got_header) = everything(new.channel(i), 0).await;
        assert_eq!(got_header.revision, revision, "member {i} has the saved revision");
        assert_ne!(got_header.cluster_id, old_header.cluster_id, "a new cluster");
        assert_eq!(got, kvs, "member {i} has every key with its revisions, version and lease");
    }
    let (got_past, _) = everything(new.channel(2), compact_at + 1).await;
    assert_eq!(got_past, past_kvs, "history after the compaction is kept");
    let mut kv = KvClient::new(new.channel(2));
    let below =
        pb::RangeRequest { key: "marker".into(), revision: compact_at - 1, ..Default::default() };
    let e = retry!(kv.range(below.clone())).unwrap_err();
    assert!(e.message().contains("compacted"), "the compaction is kept: {e:?}");
    let mut lease = LeaseClient::new(new.channel(0));
    let ttl = pb::LeaseTimeToLiveRequest { id: lease_id, keys: true };
    let ttl = retry!(lease.lease_time_to_live(ttl)).unwrap().into_inner();
    assert_eq!((ttl.granted_ttl, ttl.keys), (3600, vec![bytes::Bytes::from("leased")]));

    let mut auth = AuthClient::new(new.channel(1));
    let get = pb::AuthUserGetRequest { name: "keeper".into() };
    let roles = retry!(auth.user_get(get.clone())).unwrap().into_inner().roles;
    assert_eq!(roles, vec!["kept".to_string()], "users and roles are restored");

    // New writes continue the revision sequence.
    let put = pb::PutRequest { key: "new".into(), value: "write".into(), ..Default::default() };
    let r = retry!(kv.put(put.clone())).unwrap().into_inner();
    let header = r.header.unwrap();
    assert_eq!(header.revision, revision + 1);

    // 5. A new cluster (new ids), whose members all list every client URL.
    let mut cluster = ClusterClient::new(new.channel(1));
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
}
