//! Moving a cluster's data from etcd to raftkv and back, with real etcd 3.4 processes
//! (issue 13): what an operator does by the README's "Migrating from etcd" section.
//!
//! 1. A real etcd gets a history: puts, overwrites, deletes, a transaction (several
//!    changes at one revision), a lease with keys, a compaction, writes after it.
//! 2. `etcdctl snapshot save`, then `raftkv snapshot restore` into three data dirs and a
//!    3-member raftkv cluster started on them: every member reads every key at every
//!    revision from the compaction on with the same create/mod revision, version, value
//!    and lease; a read below the compaction fails on both; the leases have the same
//!    TTLs and keys; `HashKV` at the same revision is the same number as etcd's.
//! 3. Back: `etcdctl snapshot save` from raftkv, `etcdctl snapshot status` on it (equal
//!    to `raftkv snapshot status`), `etcdctl snapshot restore` and a real etcd started
//!    on the result: the same comparison again.
//!
//! Auth rides along: before the snapshot etcd gets `root`, a user `alice` whose role
//! may read and write only under `app/`, and `auth enable`. After each restore, with
//! auth still on, `etcdctl user/role list/get` (as root, so the passwords work from
//! the carried bcrypt hashes) print the same as on the original etcd, and `alice`
//! reads under `app/` but is refused outside it, and with a wrong password. Then auth
//! is disabled there to compare the data with a plain client.
//!
//! Without etcd installed the test prints SKIPPED and passes.

mod common;

use common::{have, raftkv, retry, ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::path::Path;
use tonic::transport::Channel;

fn put(key: &str, value: &str, lease: i64) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_string().into(),
        value: value.to_string().into(),
        lease,
        ..Default::default()
    }
}

fn del(key: &str) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest { key: key.to_string().into(), ..Default::default() }
}

/// Writes the history of step 1; returns the compact revision.
async fn write_history(ch: Channel) -> i64 {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);
    for i in 0..100 {
        retry!(kv.put(put(&format!("key/{i:03}"), &format!("value {i}"), 0))).unwrap();
    }
    for i in (0..100).step_by(3) {
        retry!(kv.put(put(&format!("key/{i:03}"), &format!("second {i}"), 0))).unwrap();
    }
    let granted = retry!(lease.lease_grant(pb::LeaseGrantRequest { ttl: 3600, id: 0 })).unwrap();
    let lease_id = granted.into_inner().id;
    retry!(kv.put(put("leased/1", "l1", lease_id))).unwrap();
    retry!(kv.put(put("leased/2", "l2", lease_id))).unwrap();
    retry!(lease.lease_grant(pb::LeaseGrantRequest { ttl: 900, id: 0 })).unwrap();
    for i in (0..100).step_by(7) {
        retry!(kv.delete_range(del(&format!("key/{i:03}")))).unwrap();
    }
    let txn = pb::TxnRequest {
        compare: vec![],
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(put("txn/a", "1", 0))),
            },
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(del("key/001"))),
            },
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(put("txn/b", "2", 0))),
            },
        ],
        failure: vec![],
    };
    let r = retry!(kv.txn(txn.clone())).unwrap().into_inner();
    let compact_at = r.header.unwrap().revision;
    for i in (0..100).step_by(5) {
        retry!(kv.put(put(&format!("key/{i:03}"), "after the compaction", 0))).unwrap();
    }
    retry!(kv.delete_range(del("txn/a"))).unwrap();
    retry!(kv.compact(pb::CompactionRequest { revision: compact_at, physical: true })).unwrap();
    compact_at
}

/// What a client can see of the data, for comparing clusters.
#[derive(Debug)]
struct Seen {
    revision: i64,
    /// Every key at each revision from the compaction on.
    history: Vec<Vec<proto::mvccpb::KeyValue>>,
    /// The error a read below the compaction gets.
    below_compaction: String,
    /// Each lease: id, granted TTL, keys.
    leases: Vec<(i64, i64, Vec<bytes::Bytes>)>,
    /// HashKV at the current revision, and its compact revision.
    hash: (u32, i64),
}

async fn observe(ch: Channel, compact_at: i64) -> Seen {
    let mut kv = KvClient::new(ch.clone());
    let range = |revision: i64| pb::RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        revision,
        ..Default::default()
    };
    let now = retry!(kv.range(range(0))).unwrap().into_inner();
    let revision = now.header.unwrap().revision;
    let mut history = Vec::new();
    for rev in compact_at..=revision {
        history.push(retry!(kv.range(range(rev))).unwrap().into_inner().kvs);
    }
    let below = retry!(kv.range(range(compact_at - 1))).unwrap_err().message().to_string();
    let mut lease = LeaseClient::new(ch.clone());
    let ids = retry!(lease.lease_leases(pb::LeaseLeasesRequest {})).unwrap().into_inner();
    let mut leases = Vec::new();
    for l in ids.leases {
        let ttl = pb::LeaseTimeToLiveRequest { id: l.id, keys: true };
        let mut t = retry!(lease.lease_time_to_live(ttl)).unwrap().into_inner();
        t.keys.sort();
        leases.push((l.id, t.granted_ttl, t.keys));
    }
    leases.sort();
    let mut m = MaintenanceClient::new(ch);
    let h = retry!(m.hash_kv(pb::HashKvRequest { revision })).unwrap().into_inner();
    Seen { revision, history, below_compaction: below, leases, hash: (h.hash, h.compact_revision) }
}

/// Asserts `got` equals `want` field by field, naming the first difference briefly.
fn same(got: &Seen, want: &Seen, who: &str) {
    assert_eq!(got.revision, want.revision, "{who}: revision");
    assert_eq!(got.below_compaction, want.below_compaction, "{who}: a read below the compaction");
    assert_eq!(got.leases, want.leases, "{who}: leases");
    for (i, (g, w)) in got.history.iter().zip(&want.history).enumerate() {
        let differ = g.iter().zip(w).find(|(a, b)| a != b);
        assert!(
            g.len() == w.len() && differ.is_none(),
            "{who}: keys at revision compact + {i}: first difference {differ:?} (counts {} and {})",
            g.len(),
            w.len()
        );
    }
    assert_eq!(got.history.len(), want.history.len(), "{who}: revisions readable");
    assert_eq!(got.hash, want.hash, "{who}: HashKV and its compact revision");
}

/// `etcdctl` with arguments; panics with its output if it fails.
fn etcdctl(args: &[&str], file: &Path) -> String {
    let out = common::etcdctl().args(args).arg(file).output().unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ROOT: &str = "root:root-pw";
const ALICE: &str = "alice:alice-pw";

/// `etcdctl --endpoints endpoint [--user user] args`: success and its output.
fn ctl(endpoint: &str, user: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut c = common::etcdctl();
    c.args(["--endpoints", endpoint]);
    if let Some(user) = user {
        c.args(["--user", user]);
    }
    let out = c.args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text + &String::from_utf8_lossy(&out.stderr))
}

/// Like [`ctl`], panicking with the output if it fails.
fn ctl_ok(endpoint: &str, user: Option<&str>, args: &[&str]) -> String {
    let (ok, out) = ctl(endpoint, user, args);
    assert!(ok, "etcdctl {args:?} at {endpoint}: {out}");
    out
}

/// Adds root, alice with a role limited to `app/`, and turns auth on.
fn set_up_auth(endpoint: &str) {
    ctl_ok(endpoint, None, &["user", "add", ROOT]);
    ctl_ok(endpoint, None, &["user", "add", ALICE]);
    ctl_ok(endpoint, None, &["role", "add", "app-rw"]);
    ctl_ok(
        endpoint,
        None,
        &["role", "grant-permission", "app-rw", "--prefix", "readwrite", "app/"],
    );
    ctl_ok(endpoint, None, &["role", "add", "one-key"]);
    ctl_ok(endpoint, None, &["role", "grant-permission", "one-key", "read", "key/002"]);
    ctl_ok(endpoint, None, &["user", "grant-role", "alice", "app-rw"]);
    ctl_ok(endpoint, None, &["user", "grant-role", "alice", "one-key"]);
    ctl_ok(endpoint, None, &["auth", "enable"]);
}

/// [`TestCluster::wait_ready`] as root (auth is on): each member answers a
/// linearizable read within 30 s in all.
fn wait_ready_as_root(c: &TestCluster) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for i in 0..c.members().len() {
        while let (false, out) = ctl(&c.endpoint(i), Some(ROOT), &["get", "ready"]) {
            assert!(std::time::Instant::now() < deadline, "member {i} not ready in 30 s: {out}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// What root sees of users, roles and permissions (etcdctl's own printing).
fn auth_seen(endpoint: &str) -> String {
    let mut seen = String::new();
    for args in [
        &["user", "list"][..],
        &["role", "list"],
        &["user", "get", "root"],
        &["user", "get", "alice"],
        &["role", "get", "root"],
        &["role", "get", "app-rw"],
        &["role", "get", "one-key"],
    ] {
        seen += &ctl_ok(endpoint, Some(ROOT), args);
    }
    seen
}

/// Auth is on and enforced: no user is refused; alice reads `app/` and her one key,
/// nothing else, and only with her password. Then auth is turned off.
fn check_auth_then_disable(endpoint: &str, want: &str, who: &str) {
    assert_eq!(auth_seen(endpoint), want, "{who}: users and roles");
    let (ok, out) = ctl(endpoint, None, &["get", "app/"]);
    assert!(!ok, "{who}: a read without a user while auth is on: {out}");
    ctl_ok(endpoint, Some(ALICE), &["get", "--prefix", "app/"]);
    ctl_ok(endpoint, Some(ALICE), &["get", "key/002"]);
    for args in [&["get", "key/003"][..], &["get", "--prefix", "key/"], &["put", "other", "x"]] {
        let (ok, out) = ctl(endpoint, Some(ALICE), args);
        assert!(!ok && out.contains("permission denied"), "{who}: alice {args:?}: {out}");
    }
    let (ok, out) = ctl(endpoint, Some("alice:wrong"), &["get", "app/"]);
    assert!(!ok && out.contains("authentication failed"), "{who}: a wrong password: {out}");
    ctl_ok(endpoint, Some(ROOT), &["auth", "disable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_moves_from_etcd_to_raftkv_and_back_with_nothing_lost() {
    if !have("etcd", "--version") || !have("etcdctl", "version") {
        println!("\n*** SKIPPED etcd_migration: needs `etcd` and `etcdctl` 3.4 ***\n");
        return;
    }
    // 1. etcd and its history.
    let mut etcd =
        TestCluster::start_spec(ClusterSpec::etcd("migrate-from", &[]).named("e").members(1));
    etcd.wait_ready().await;
    let compact_at = write_history(etcd.channel(0)).await;
    let want = observe(etcd.channel(0), compact_at).await;
    assert_eq!(want.leases.len(), 2);
    assert!(want.below_compaction.contains("compacted"), "{}", want.below_compaction);
    set_up_auth(&etcd.endpoint(0));
    let want_auth = auth_seen(&etcd.endpoint(0));
    assert!(want_auth.contains("[app/, app0)"), "{want_auth}");
    let from_etcd = etcd.root().join("etcd.db");
    etcdctl(&["--endpoints", &etcd.endpoint(0), "--user", ROOT, "snapshot", "save"], &from_etcd);
    etcd.kill_all();

    // 2. Into a 3-member raftkv.
    let mut rk = TestCluster::plan(ClusterSpec::raftkv("migrate-to", &[]).named("r"));
    for (i, m) in rk.members().iter().enumerate() {
        let (ok, _, err) = raftkv(&[
            "snapshot",
            "restore",
            from_etcd.to_str().unwrap(),
            "--name",
            &m.name,
            "--initial-cluster",
            rk.initial_cluster(),
            "--initial-advertise-peer-urls",
            &rk.peer_url(i),
            "--data-dir",
            m.dir.to_str().unwrap(),
        ]);
        assert!(ok, "raftkv snapshot restore of etcd's snapshot: {err}");
    }
    rk.spawn_all();
    wait_ready_as_root(&rk);
    let from_raftkv = rk.root().join("raftkv.db");
    etcdctl(&["--endpoints", &rk.endpoint(1), "--user", ROOT, "snapshot", "save"], &from_raftkv);
    check_auth_then_disable(&rk.endpoint(0), &want_auth, "raftkv");
    for i in 0..3 {
        same(&observe(rk.channel(i), compact_at).await, &want, &format!("raftkv member {i}"));
    }

    // 3. And back into etcd (the snapshot was saved with auth on).
    rk.kill_all();
    let theirs = etcdctl(&["snapshot", "status"], &from_raftkv);
    let (ok, ours, err) = raftkv(&["snapshot", "status", from_raftkv.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(theirs, ours);
    assert!(theirs.contains(&format!(", {}, ", want.revision)), "{theirs}");
    let mut back = TestCluster::plan(ClusterSpec::etcd("migrate-back", &[]).named("b").members(1));
    let m = &back.members()[0];
    let dir = m.dir.to_str().unwrap().to_string();
    let args = [
        "snapshot",
        "restore",
        "--name",
        &m.name,
        "--initial-cluster",
        back.initial_cluster(),
        "--initial-advertise-peer-urls",
        &back.peer_url(0),
        "--initial-cluster-token",
        "compat",
        "--data-dir",
        &dir,
    ];
    etcdctl(&args, &from_raftkv);
    back.spawn_all();
    wait_ready_as_root(&back);
    check_auth_then_disable(&back.endpoint(0), &want_auth, "etcd restored from raftkv");
    same(&observe(back.channel(0), compact_at).await, &want, "etcd restored from raftkv");
}
