//! An existing Rust etcd client, the `etcd-client` crate, against a real 3-member
//! raftkv cluster (real processes): whoever uses it with etcd should notice no change.
//!
//! - KV: put, get (prefix, limit, at a revision), delete and txn (compare version and
//!   value, then / else), every result checked;
//! - Watch: a watch opened before the leader is killed (`kill -9`), resumed from its
//!   last revision + 1 when its stream breaks (as etcd clients do), sees every
//!   acknowledged write exactly once, in revision order, with no gaps;
//! - Lease: an expired lease's keys are gone on every member, deleted at one revision;
//! - Lock: a second locker waits while the first holds the lock, then gets it.
//! - Auth: user root with a password (`ConnectOptions::with_user`), the token refreshed
//!   by the client after `--auth-token-ttl` expired it; Lease TimeToLive refused to a
//!   user who may not read every key attached to the lease.

mod common;

use common::TestCluster;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, LockOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Length of a raftkv tick in these tests; elections come after 20-40 ticks.
const TICK_MS: u64 = 50;
/// raftkv's election timeout in ticks (the lower bound of its randomised range).
const ELECTION_TIMEOUT_TICKS: u64 = 20;
const SERVER_FLAGS: &[&str] = &["--tick-ms", "50", "--snapshot-count", "100"];

/// The tests here each run a 3-member cluster; one at a time, so that they do not
/// starve each other of CPU on a small machine and cause spurious elections.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds rounded up.
fn lease_ttl_min_secs() -> i64 {
    (ELECTION_TIMEOUT_TICKS * TICK_MS * 3 / 2).div_ceil(1000) as i64
}

/// Retries a call while the cluster answers `Unavailable` (an election under way, or a
/// forward racing a leader change on a loaded machine), as etcd's own clients do and
/// etcd-client leaves to its user; other answers, errors included, are returned.
/// Not after "request timed out": the write may have been applied, so resending it
/// could apply it twice.
macro_rules! retry {
    ($call:expr) => {{
        let mut tries = 0;
        loop {
            match $call.await {
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.code() == tonic::Code::Unavailable
                        && s.message() != "etcdserver: request timed out"
                        && tries < 50 =>
                {
                    eprintln!("retrying after: {}", s.message());
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
    }};
}

async fn connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    Client::connect(endpoints, Some(options)).await
}

/// A client of every member, once the cluster has a leader.
async fn client_of_all(cluster: &TestCluster) -> Client {
    cluster.leader().await;
    connect(&cluster.endpoints()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Keys and values of a get, in order.
fn pairs(r: &etcd_client::GetResponse) -> Vec<(String, String)> {
    r.kvs().iter().map(|kv| (text(kv.key()), text(kv.value()))).collect()
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.expect("a response header").revision()
}

/// Put, get with prefix / limit / revision, delete, and txn compare / then / else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_put_get_delete_and_txn_work_as_with_etcd() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("etcd-client-kv", SERVER_FLAGS);
    let mut c = client_of_all(&cluster).await;

    // put, and put returning the previous value.
    let first = retry!(c.put("a/1", "one", None)).unwrap();
    let rev_one = revision(first.header());
    assert!(first.prev_key().is_none());
    c.put("a/2", "two", None).await.unwrap();
    c.put("a/3", "three", None).await.unwrap();
    c.put("b", "bee", None).await.unwrap();
    let again = c.put("a/1", "uno", Some(PutOptions::new().with_prev_key())).await.unwrap();
    let prev = again.prev_key().expect("the previous value");
    assert_eq!((text(prev.key()), text(prev.value())), ("a/1".into(), "one".into()));
    assert_eq!(revision(again.header()), rev_one + 4);

    // get: one key, a prefix, a limit, and an older revision.
    let one = c.get("a/1", None).await.unwrap();
    assert_eq!(pairs(&one), [("a/1".into(), "uno".into())]);
    let kv = &one.kvs()[0];
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (rev_one, rev_one + 4, 2));
    let all = c.get("a/", Some(GetOptions::new().with_prefix())).await.unwrap();
    let want: Vec<(String, String)> = [("a/1", "uno"), ("a/2", "two"), ("a/3", "three")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    assert_eq!(pairs(&all), want);
    assert_eq!(all.count(), 3);
    let limited = c.get("a/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!(pairs(&limited), want[..2]);
    assert!(limited.more(), "more keys than the limit");
    assert_eq!(limited.count(), 3, "count is of all keys in the range");
    let old = c.get("a/1", Some(GetOptions::new().with_revision(rev_one))).await.unwrap();
    assert_eq!(pairs(&old), [("a/1".into(), "one".into())]);
    assert!(c.get("nope", None).await.unwrap().kvs().is_empty());

    // delete: one key, then a prefix returning what it deleted.
    assert_eq!(c.delete("a/2", None).await.unwrap().deleted(), 1);
    assert_eq!(c.delete("a/2", None).await.unwrap().deleted(), 0);
    let gone = c.delete("a/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await;
    let gone = gone.unwrap();
    assert_eq!(gone.deleted(), 2);
    let keys: Vec<String> = gone.prev_kvs().iter().map(|kv| text(kv.key())).collect();
    assert_eq!(keys, ["a/1", "a/3"]);
    assert!(c.get("a/", Some(GetOptions::new().with_prefix())).await.unwrap().kvs().is_empty());
    assert_eq!(pairs(&c.get("b", None).await.unwrap()), [("b".into(), "bee".into())]);

    // txn: compare version and value; then puts and reads its own write.
    c.put("t", "v1", None).await.unwrap();
    let guard = || {
        Txn::new()
            .when([
                Compare::version("t", CompareOp::Equal, 1),
                Compare::value("t", CompareOp::Equal, "v1"),
            ])
            .and_then([TxnOp::put("t", "v2", None), TxnOp::get("t", None)])
            .or_else([TxnOp::get("t", None), TxnOp::put("t-lost", "yes", None)])
    };
    let won = c.txn(guard()).await.unwrap();
    assert!(won.succeeded());
    match won.op_responses().as_slice() {
        [TxnOpResponse::Put(_), TxnOpResponse::Get(g)] => {
            assert_eq!(pairs(g), [("t".into(), "v2".into())], "the txn reads its own put");
        }
        other => panic!("then-branch responses: {other:?}"),
    }
    // The same txn again: version is 2 now, so the else branch runs.
    let lost = c.txn(guard()).await.unwrap();
    assert!(!lost.succeeded());
    match lost.op_responses().as_slice() {
        [TxnOpResponse::Get(g), TxnOpResponse::Put(_)] => {
            assert_eq!(pairs(g), [("t".into(), "v2".into())]);
        }
        other => panic!("else-branch responses: {other:?}"),
    }
    assert_eq!(pairs(&c.get("t-lost", None).await.unwrap()), [("t-lost".into(), "yes".into())]);
    let t = c.get("t", None).await.unwrap();
    assert_eq!((pairs(&t), t.kvs()[0].version()), (vec![("t".into(), "v2".into())], 2));
}

/// What a watcher saw: (key, value, revision, is_delete).
type Seen = (String, String, i64, bool);

/// Watches `prefix` from `start` (0: from now) on one client until the stream breaks (or
/// is silent for 10 s); appends what it sees to `seen` and tells `created` once the watch
/// is created. Returns the next revision to ask for.
async fn watch_until_broken(
    client: &mut Client,
    prefix: &str,
    start: i64,
    seen: &Mutex<Vec<Seen>>,
    created: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> i64 {
    let mut next = start;
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    let Ok(mut stream) = client.watch(prefix, Some(options)).await else { return next };
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let Ok(Ok(Some(r))) = message else { return next };
        assert!(!r.canceled(), "watch canceled: {}", r.cancel_reason());
        if r.created() {
            if next == 0 {
                next = revision(r.header()) + 1;
            }
            if let Some(tx) = created.take() {
                let _ = tx.send(());
            }
            continue;
        }
        let mut seen = seen.lock().unwrap();
        for e in r.events() {
            let kv = e.kv().expect("an event's key");
            let s = (text(kv.key()), text(kv.value()), kv.mod_revision(), false);
            let s = (s.0, s.1, s.2, e.event_type() == EventType::Delete);
            assert!(s.2 >= next, "event {s:?} below revision {next}: out of order or again");
            next = s.2 + 1;
            seen.push(s);
        }
    }
}

/// A watcher that resumes on the next member from its last revision + 1 whenever its
/// stream breaks, as etcd clients do; it starts on member `first` and runs until aborted.
async fn resilient_watch(
    endpoints: Vec<String>,
    first: usize,
    prefix: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    created: tokio::sync::oneshot::Sender<()>,
) {
    let mut created = Some(created);
    let mut next = 0;
    let mut i = first;
    let mut reconnects = 0;
    loop {
        if let Ok(mut client) = connect(&endpoints[i..=i]).await {
            next = watch_until_broken(&mut client, prefix, next, &seen, &mut created).await;
        }
        reconnects += 1;
        eprintln!("watch stream on member {i} ended; resuming at revision {next} ({reconnects})");
        i = (i + 1) % endpoints.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `key` through `client`, retrying failed attempts (each with its own value) for
/// up to 30 s; returns the acknowledged value and revision.
async fn put_until_acknowledged(client: &mut Client, key: &str) -> (String, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        let value = format!("{key}#{attempt}");
        match client.put(key, value.as_str(), None).await {
            Ok(r) => return (value, revision(r.header())),
            Err(e) => {
                assert!(Instant::now() < deadline, "{key} not written within 30 s: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    unreachable!()
}

/// A watch opened with etcd-client on the leader before the leader is killed
/// (`kill -9`); a writer with all three endpoints keeps writing through the election.
/// The watch resumes on another member from its last revision + 1: it must see
/// exactly the committed history — every event once, in revision order, no gaps —
/// and in it every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_acknowledged_write_once_across_a_leader_kill() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    const BEFORE: usize = 20;
    const AFTER: usize = 40;
    let mut cluster = TestCluster::start("etcd-client-watch", SERVER_FLAGS);
    let mut writer = client_of_all(&cluster).await;
    let leader = cluster.leader().await;
    writer.put("other", "not watched", None).await.unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let (created_tx, created_rx) = tokio::sync::oneshot::channel();
    let watcher =
        tokio::spawn(resilient_watch(cluster.endpoints(), leader, "w/", seen.clone(), created_tx));
    tokio::time::timeout(Duration::from_secs(20), created_rx)
        .await
        .expect("the watch is created within 20 s")
        .unwrap();

    let mut acked = Vec::new();
    for n in 0..BEFORE + AFTER {
        if n == BEFORE {
            cluster.kill(leader);
        }
        let key = format!("w/{n:03}");
        let (value, rev) = put_until_acknowledged(&mut writer, &key).await;
        acked.push((key, value, rev, false));
    }
    let last = acked.last().unwrap().2;
    let watched = common::wait_for(
        "the watcher reaching the last acknowledged write",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let seen = seen.lock().unwrap();
            let done = seen.last().is_some_and(|s| s.2 >= last);
            std::future::ready(done.then(|| seen.clone()))
        },
    )
    .await;
    watcher.abort();

    // The committed history from a survivor, in one watch from before the first write.
    let first = acked[0].2;
    let survivor = cluster.endpoint((leader + 1) % 3);
    let mut history_client = connect(&[survivor]).await.unwrap();
    let history = Mutex::new(Vec::new());
    let mut stream = history_client
        .watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(first)))
        .await
        .unwrap();
    while history.lock().unwrap().last().is_none_or(|s: &Seen| s.2 < last) {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let r = r.expect("history within 10 s").unwrap().expect("an open stream");
        for e in r.events() {
            let kv = e.kv().unwrap();
            let s = (text(kv.key()), text(kv.value()), kv.mod_revision(), false);
            history.lock().unwrap().push((s.0, s.1, s.2, e.event_type() == EventType::Delete));
        }
    }
    let history = history.into_inner().unwrap();
    let watched: Vec<Seen> = watched.into_iter().filter(|s| s.2 >= first && s.2 <= last).collect();
    assert_eq!(watched, history, "the watcher saw exactly the committed history");
    assert!(watched.windows(2).all(|w| w[0].2 < w[1].2), "revisions strictly increase");
    for a in &acked {
        let times = watched.iter().filter(|s| *s == a).count();
        assert_eq!(times, 1, "acknowledged write {a:?} seen once");
    }
    eprintln!(
        "{} acknowledged writes, {} events watched across the leader kill",
        acked.len(),
        watched.len()
    );
    cluster.spawn(leader);
}

/// A lease nobody keeps alive expires; its keys are then gone on every member, deleted
/// at one revision, while a key without the lease stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_on_every_member_at_one_revision() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("etcd-client-lease", SERVER_FLAGS);
    let mut c = client_of_all(&cluster).await;

    // A TTL below the minimum is raised to it, as etcd does.
    let granted = retry!(c.lease_grant(1, None)).unwrap();
    assert_eq!(granted.ttl(), lease_ttl_min_secs());
    let lease = granted.id();
    let leased = PutOptions::new().with_lease(lease);
    for key in ["l/a", "l/b", "l/c"] {
        c.put(key, "leased", Some(leased.clone())).await.unwrap();
    }
    c.put("l/keep", "no lease", None).await.unwrap();
    // Right after the election, as etcd: the leader answers keep-alives at once (no
    // "leader changed" while its lease clock starts), so no retry here.
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("a keep-alive answer within 10 s")
        .unwrap()
        .expect("a keep-alive answer");
    assert_eq!((answer.id(), answer.ttl()), (lease, lease_ttl_min_secs()));
    let ttl = c.lease_time_to_live(lease, None).await.unwrap();
    assert!(ttl.ttl() > 0, "alive: {ttl:?}");
    // Stop keeping it alive.
    let stopped_at = Instant::now();
    drop((keeper, answers));

    let prefix = || Some(GetOptions::new().with_prefix().with_serializable());
    let mut deleted_at = Vec::new();
    for (i, endpoint) in cluster.endpoints().into_iter().enumerate() {
        let mut member = connect(&[endpoint]).await.unwrap();
        let after = common::wait_for(
            &format!("the leased keys gone on member {i}"),
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                let mut member = member.clone();
                async move {
                    let r = member.get("l/", prefix()).await.ok()?;
                    (r.kvs().len() == 1).then_some(r)
                }
            },
        )
        .await;
        assert_eq!(pairs(&after), [("l/keep".into(), "no lease".into())], "member {i}");
        // Nothing is written after the expiry: this member's revision is the one that
        // deleted the keys, and just before it they were all there.
        let rev = revision(after.header());
        let before = member.get("l/", prefix().map(|o| o.with_revision(rev - 1))).await.unwrap();
        let keys: Vec<String> = pairs(&before).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["l/a", "l/b", "l/c", "l/keep"], "member {i} at revision {}", rev - 1);
        deleted_at.push(rev);
    }
    let waited = stopped_at.elapsed();
    eprintln!("lease expired within {waited:?} of its last keep-alive; deleted at {deleted_at:?}");
    assert!(deleted_at.iter().all(|r| *r == deleted_at[0]), "one revision: {deleted_at:?}");
    let ttl = retry!(c.lease_time_to_live(lease, None)).unwrap();
    assert_eq!(ttl.ttl(), -1, "the lease is gone");
}

/// A holds the lock; B's lock call waits (its key queued, writes going on) until A
/// unlocks, then B holds it, with a key created after A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_locker_waits_until_the_first_unlocks() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("etcd-client-lock", SERVER_FLAGS);
    let mut a = client_of_all(&cluster).await;
    let mut b = connect(&cluster.endpoints()).await.unwrap();
    let lease_a = retry!(a.lease_grant(60, None)).unwrap().id();
    let lease_b = retry!(b.lease_grant(60, None)).unwrap().id();

    let held = a.lock("L", Some(LockOptions::new().with_lease(lease_a))).await.unwrap();
    let key_a = held.key().to_vec();
    assert!(key_a.starts_with(b"L/"), "lock key {}", text(&key_a));
    let waiter = tokio::spawn(async move {
        b.lock("L", Some(LockOptions::new().with_lease(lease_b))).await.map(|r| r.key().to_vec())
    });

    // B's key is queued behind A's...
    let queued = common::wait_for(
        "B's lock key",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let mut a = a.clone();
            async move {
                let r = a.get("L/", Some(GetOptions::new().with_prefix())).await.ok()?;
                (r.kvs().len() == 2).then_some(r)
            }
        },
    )
    .await;
    let create_a = queued.kvs().iter().find(|kv| kv.key() == key_a).unwrap().create_revision();
    // ...and after more writes have been acknowledged, B's call has still not returned.
    for n in 0..5 {
        a.put(format!("meanwhile/{n}"), "x", None).await.unwrap();
    }
    assert!(!waiter.is_finished(), "B got the lock while A holds it");

    let unlocked = a.unlock(key_a.clone()).await.unwrap();
    let key_b = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("B gets the lock within 10 s of A's unlock")
        .unwrap()
        .unwrap();
    assert_ne!(key_b, key_a);
    let now = a.get(key_b.clone(), None).await.unwrap();
    let create_b =
        now.kvs().first().expect("B's key exists while B holds the lock").create_revision();
    assert!(create_b > create_a, "B's key ({create_b}) after A's ({create_a})");
    assert!(create_b < revision(unlocked.header()), "B queued before A unlocked");
    assert!(a.get(key_a, None).await.unwrap().kvs().is_empty(), "A's key is gone");
}

/// `--auth-token-ttl` of the auth tests, in seconds; bcrypt at its lowest cost keeps
/// the logins fast.
const AUTH_TOKEN_TTL_SECS: u64 = 2;
const AUTH_FLAGS: &[&str] =
    &["--tick-ms", "50", "--snapshot-count", "100", "--auth-token-ttl", "2", "--bcrypt-cost", "4"];

/// A client of the first member as `user` (its token refreshed on expiry if
/// `refresh`). Tokens are valid on every member (`tests/tokens.rs`); one member keeps
/// the expiry checks here on one member's clock.
async fn connect_as(
    cluster: &TestCluster,
    user: &str,
    password: &str,
    refresh: bool,
) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10))
        .with_user(user, password)
        .with_auto_token_refresh(refresh);
    Client::connect(&cluster.endpoints()[..1], Some(options)).await
}

/// Adds user root (password `rootpw`) with the root role and enables auth.
async fn enable_auth(cluster: &TestCluster) {
    let mut c = client_of_all(cluster).await;
    retry!(c.user_add("root", "rootpw", None)).unwrap();
    retry!(c.user_grant_role("root", "root")).unwrap();
    retry!(c.auth_enable()).unwrap();
}

fn grpc_message(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

/// etcd's simple tokens expire `--auth-token-ttl` after their last use; etcd-client
/// with `with_auto_token_refresh` authenticates again on "invalid auth token" and
/// resends. Without it, the same expiry fails the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_root_with_a_password_and_token_refresh_after_expiry_work_as_with_etcd() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("etcd-client-auth", AUTH_FLAGS);
    enable_auth(&cluster).await;

    let mut anonymous = connect(&cluster.endpoints()).await.unwrap();
    let refused = anonymous.put("k", "v", None).await.map_err(grpc_message);
    assert_eq!(refused.err().as_deref(), Some("etcdserver: user name is empty"));
    let wrong = connect_as(&cluster, "root", "nope", true).await.map(|_| ()).map_err(grpc_message);
    let wrong = wrong.err().unwrap_or_default();
    assert!(wrong.contains("authentication failed, invalid user ID or password"), "{wrong}");

    let mut root = connect_as(&cluster, "root", "rootpw", true).await.unwrap();
    let mut fixed = connect_as(&cluster, "root", "rootpw", false).await.unwrap();
    root.put("k", "v1", None).await.unwrap();
    fixed.put("k", "v2", None).await.unwrap();
    let users = root.user_list().await.unwrap();
    assert_eq!(users.users(), ["root"]);
    // A token taken now and left unused: once it is refused, the clients' tokens
    // (last used before it was issued) have expired too. The TTL is a server clock
    // the test cannot observe otherwise: wait it out, then check that it passed.
    let mut probe = connect_as(&cluster, "root", "rootpw", false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(AUTH_TOKEN_TTL_SECS + 1)).await;
    let expired = probe.get("k", None).await.map(|_| ()).map_err(grpc_message);
    assert_eq!(expired.err().as_deref(), Some("etcdserver: invalid auth token"));

    let stale = fixed.get("k", None).await.map(|_| ()).map_err(grpc_message);
    assert_eq!(stale.err().as_deref(), Some("etcdserver: invalid auth token"));
    let got = root.get("k", None).await.expect("the refreshed token works");
    assert_eq!(pairs(&got), [("k".into(), "v2".into())]);
    root.put("k", "v3", None).await.unwrap();
    fixed.refresh_token().await.unwrap();
    let got = fixed.get("k", None).await.unwrap();
    assert_eq!(pairs(&got), [("k".into(), "v3".into())]);
}

/// etcd 3.4.26 and later (the fix for TimeToLive showing key names): while auth is
/// on, Lease TimeToLive needs read permission on every key attached to the lease,
/// whether or not the keys are asked for, and a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_time_to_live_needs_read_permission_on_the_attached_keys() {
    use etcd_client::{LeaseTimeToLiveOptions, Permission};
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("etcd-client-lease-auth", AUTH_FLAGS);
    enable_auth(&cluster).await;
    let mut root = connect_as(&cluster, "root", "rootpw", true).await.unwrap();
    root.user_add("reader", "rpw", None).await.unwrap();
    root.role_add("pub-reader").await.unwrap();
    root.role_grant_permission("pub-reader", Permission::read("pub/").with_prefix()).await.unwrap();
    root.user_grant_role("reader", "pub-reader").await.unwrap();
    let mut lease = Vec::new();
    for keys in [&["pub/a", "pub/b"][..], &["pub/c", "secret"][..], &[][..]] {
        let id = root.lease_grant(100, None).await.unwrap().id();
        for key in keys {
            root.put(*key, "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
        }
        lease.push(id);
    }

    let mut reader = connect_as(&cluster, "reader", "rpw", true).await.unwrap();
    let with_keys = || Some(LeaseTimeToLiveOptions::new().with_keys());
    let readable = reader.lease_time_to_live(lease[0], with_keys()).await.unwrap();
    assert_eq!(readable.keys(), [b"pub/a".to_vec(), b"pub/b".to_vec()]);
    let bare = reader.lease_time_to_live(lease[0], None).await.unwrap();
    assert!(bare.keys().is_empty() && bare.ttl() > 0, "keys only when asked: {bare:?}");
    let denied = "etcdserver: permission denied";
    for options in [with_keys(), None] {
        let secret = reader.lease_time_to_live(lease[1], options).await.map_err(grpc_message);
        assert_eq!(secret.err().as_deref(), Some(denied));
    }
    let empty = reader.lease_time_to_live(lease[2], with_keys()).await.unwrap();
    assert!(empty.keys().is_empty() && empty.ttl() > 0, "{empty:?}");
    let all = root.lease_time_to_live(lease[1], with_keys()).await.unwrap();
    assert_eq!(all.keys(), [b"pub/c".to_vec(), b"secret".to_vec()], "root reads every key");
    let mut anonymous = connect(&cluster.endpoints()).await.unwrap();
    let nobody = anonymous.lease_time_to_live(lease[2], None).await.map_err(grpc_message);
    assert_eq!(nobody.err().as_deref(), Some("etcdserver: user name is empty"));
}

/// etcd's Authenticate first waits for a linearizable read: a user added or auth enabled
/// through one member logs in through any other member at once, though that member may
/// not have applied the write yet (a follower learns the commit at the next message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_through_the_leader_logs_in_through_a_follower_at_once() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("etcd-client-auth-follower", AUTH_FLAGS);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let only = |i: usize| vec![cluster.endpoint(i)];
    let mut through_leader = connect(&only(leader)).await.unwrap();
    retry!(through_leader.user_add("root", "rootpw", None)).unwrap();
    retry!(through_leader.user_grant_role("root", "root")).unwrap();
    retry!(through_leader.auth_enable()).unwrap();
    let options = |user: &str, password: &str| {
        ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10))
            .with_user(user, password)
    };
    let root = Client::connect(only(follower), Some(options("root", "rootpw"))).await;
    let mut root = root.expect("root logs in through a follower right after auth enable");
    let mut root_at_leader =
        Client::connect(only(leader), Some(options("root", "rootpw"))).await.unwrap();
    for i in 0..10 {
        let (user, password) = (format!("u{i}"), format!("p{i}"));
        root_at_leader.user_add(user.as_str(), password.as_str(), None).await.unwrap();
        let login = Client::connect(only(follower), Some(options(&user, &password))).await;
        let login = login.map(|_| ()).map_err(grpc_message);
        assert_eq!(login, Ok(()), "{user} added through the leader logs in through a follower");
    }
    let users = root.user_list().await.unwrap();
    assert_eq!(users.users().len(), 11, "{users:?}");
}
