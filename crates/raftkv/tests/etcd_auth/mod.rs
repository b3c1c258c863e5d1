//! etcd 3.4's authentication, side by side: one `etcdctl` script of users, roles,
//! permissions and auth enable/disable, then what a user restricted to prefixes may
//! and may not do in get/put/del/txn/watch/lease and the admin-only maintenance
//! calls, runs against a 3-member etcd 3.4 cluster and a 3-member raftkv cluster; the
//! transcripts must agree line by line (normalised as the main suite normalises).
//! Then, through gRPC, a token is refused once `--auth-token-ttl` has passed unused.
//!
//! The whole security script runs a second time with mutual TLS on both ports
//! (`--client-cert-auth`) and auth together, on etcd 3.4 and raftkv with the same
//! certificates, followed by certificate users: without a token, the client
//! certificate's common name is the user (etcd's `AuthInfoFromTLS`).

use super::*;

/// Seconds a token lives unused on both clusters (etcd's `--auth-token-ttl`).
const TOKEN_TTL_SECS: u64 = 2;

const TXN_ALLOWED: &str = "value(\"ro/a\") = \"1\"\n\nput rw/x 1\n\nget ro/a\n\n";
const TXN_DENIED_FAILURE_BRANCH: &str = "value(\"ro/a\") = \"1\"\n\nput rw/x 1\n\nget other\n\n";
const TXN_DENIED_COMPARE: &str = "value(\"other\") = \"1\"\n\nput rw/x 1\n\n\n";
const TXN_DENIED_WRITE: &str = "\nput ro/a 2\n\n\n";

const AUTH_SCRIPT: &[Step] = &[
    // Users and roles while auth is off, with etcd's errors.
    Run("user add root:rootpw"),
    Run("user add root:again"),
    Run("user add alice:apw"),
    Run("role add reader"),
    Run("role add reader"),
    Run("role grant-permission reader --prefix=true read pub/"),
    Run("role grant-permission reader readwrite own"),
    Run("role grant-permission reader write a b"),
    Run("role grant-permission nope read x"),
    Run("role get reader"),
    Run("role get nope"),
    Run("role list"),
    Run("user grant-role alice reader"),
    Run("user grant-role alice nope"),
    Run("user get alice"),
    Run("user get alice --detail"),
    Run("user get nobody"),
    Run("user list"),
    // Enabling needs root with the root role.
    Run("auth enable"),
    Run("user grant-role root root"),
    Run("auth enable"),
    Run("auth enable"),
    Run("put k v"),
    Run("--user=root:rootpw put pub/a 1"),
    Run("--user=root:rootpw put secret s"),
    Run("--user=root:wrong get pub/a"),
    Run("--user=nobody:x get pub/a"),
    // A reader of pub/ with read-write on the single key `own`.
    Run("--user=alice:apw get pub/a"),
    Run("--user=alice:apw get pub/ --prefix"),
    Run("--user=alice:apw get secret"),
    Run("--user=alice:apw get  --from-key"),
    Run("--user=alice:apw put pub/a 2"),
    Run("--user=alice:apw put own 2"),
    Run("--user=alice:apw get own"),
    Run("--user=alice:apw del pub/a"),
    Run("--user=alice:apw del own"),
    Run("--user=alice:apw user list"),
    Run("--user=alice:apw user get alice"),
    Run("--user=alice:apw role get reader"),
    Run("--user=alice:apw auth disable"),
    Run("--user=root:rootpw user get alice"),
    // A second user: read-only on ro/, read-write on rw/ (prefixes).
    Run("--user=root:rootpw user add bob:bpw"),
    Run("--user=root:rootpw role add r1"),
    Run("--user=root:rootpw role grant-permission r1 --prefix=true read ro/"),
    Run("--user=root:rootpw role grant-permission r1 --prefix=true readwrite rw/"),
    Run("--user=root:rootpw user grant-role bob r1"),
    Run("--user=root:rootpw put ro/a 1"),
    Run("--user=root:rootpw put other o"),
    Run("--user=bob:bpw put rw/a 1"),
    Run("--user=bob:bpw get rw/ --prefix"),
    Run("--user=bob:bpw get ro/ --prefix"),
    Run("--user=bob:bpw put ro/a 2"),
    Run("--user=bob:bpw del rw/a"),
    Run("--user=bob:bpw del ro/a"),
    Run("--user=bob:bpw del other"),
    Stdin("--user=bob:bpw txn", TXN_ALLOWED),
    Stdin("--user=bob:bpw txn", TXN_DENIED_FAILURE_BRANCH),
    Stdin("--user=bob:bpw txn", TXN_DENIED_COMPARE),
    Stdin("--user=bob:bpw txn", TXN_DENIED_WRITE),
    Spawn("w-denied", "--user=bob:bpw watch other"),
    Until(Ended("w-denied")),
    Stop("w-denied"),
    // From revision 1 (the history holds the put of ro/a), then a live put.
    Spawn("w-ro", "--user=bob:bpw watch ro/ --prefix --rev 1"),
    Until(Lines("w-ro", 3)),
    Run("--user=root:rootpw put ro/b 2"),
    Until(Lines("w-ro", 6)),
    Stop("w-ro"),
    Run("--user=bob:bpw lease grant 100"),
    Run("--user=bob:bpw defrag"),
    Run("--user=bob:bpw endpoint hashkv"),
    Run("--user=bob:bpw alarm list"),
    // Managing roles and root while auth is on.
    Run("--user=root:rootpw role revoke-permission reader own"),
    Run("--user=root:rootpw role revoke-permission reader own"),
    Run("--user=root:rootpw user revoke-role alice reader"),
    Run("--user=root:rootpw user revoke-role alice reader"),
    Run("--user=alice:apw get pub/a"),
    Run("--user=root:rootpw user delete root"),
    Run("--user=root:rootpw role delete root"),
    Run("--user=root:rootpw user revoke-role root root"),
    Stdin("--user=root:rootpw user passwd alice --interactive=false", "newpw\n"),
    Run("--user=alice:apw user get alice"),
    Run("--user=alice:newpw user get alice"),
    Run("--user=root:rootpw role delete r1"),
    Run("--user=root:rootpw user get bob"),
    Run("--user=root:rootpw user delete alice"),
    Run("--user=root:rootpw user delete alice"),
    Run("--user=root:rootpw auth disable"),
    Run("auth disable"),
    Run("get pub/a"),
    Run("user list"),
    // On again, for the token expiry check that follows.
    Run("auth enable"),
];

/// A token unused for longer than `--auth-token-ttl` is refused with etcd's error;
/// a fresh one works.
async fn token_expiry(cluster: &Cluster) -> Vec<String> {
    let channel = cluster.members.channel(0);
    let mut auth = pb::auth_client::AuthClient::new(channel.clone());
    let login = || pb::AuthenticateRequest { name: "root".into(), password: "rootpw".into() };
    let get = |token: &str| {
        let mut r = tonic::Request::new(pb::RangeRequest {
            key: b"k".to_vec().into(),
            ..Default::default()
        });
        r.metadata_mut().insert("token", token.parse().unwrap());
        r
    };
    let mut kv = pb::kv_client::KvClient::new(channel);
    let mut out = Vec::new();
    let token = auth.authenticate(login()).await.unwrap().into_inner().token;
    out.push(format!("fresh token: {:?}", kv.range(get(&token)).await.map(|_| "ok")));
    // The TTL is a clock the test cannot observe otherwise: wait it out, plus etcd's
    // 1 s token-keeper resolution and a margin.
    tokio::time::sleep(Duration::from_secs(TOKEN_TTL_SECS + 2)).await;
    let expired =
        kv.range(get(&token)).await.map(|_| "ok").map_err(|s| (s.code(), s.message().to_string()));
    out.push(format!("expired token: {expired:?}"));
    let none = kv.range(pb::RangeRequest { key: b"k".to_vec().into(), ..Default::default() }).await;
    let none = none.map(|_| "ok").map_err(|s| (s.code(), s.message().to_string()));
    out.push(format!("no token: {none:?}"));
    let token = auth.authenticate(login()).await.unwrap().into_inner().token;
    out.push(format!("new token: {:?}", kv.range(get(&token)).await.map(|_| "ok")));
    out
}

#[test]
fn the_auth_script_matches_etcd() {
    if !common::have("etcdctl", "version") || !common::have("etcd", "--version") {
        println!("\n*** SKIPPED etcd_compat auth: needs `etcd` and `etcdctl` 3.4 ***\n");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ttl = format!("--auth-token-ttl={TOKEN_TTL_SECS}");
    // The lowest cost keeps the many logins of the script fast on both.
    let flags = [ttl.as_str(), "--bcrypt-cost=4"];
    let etcd = Cluster::start_with("etcd", &rt, "compat-auth", &flags);
    let raftkv = Cluster::start_with("raftkv", &rt, "compat-auth", &flags);
    let mut transcripts = Vec::new();
    let mut unseen = Vec::new();
    for cluster in [&etcd, &raftkv] {
        let (t, not_seen) = run_script(cluster, AUTH_SCRIPT);
        unseen.extend(not_seen);
        transcripts.push(normalised(cluster, AUTH_SCRIPT, t));
    }
    let mut failures = compare(&transcripts[0], &transcripts[1]);
    let (e, r) = rt.block_on(async { tokio::join!(token_expiry(&etcd), token_expiry(&raftkv)) });
    failures.extend(compare_grpc(&e, &r));
    failures.extend(unseen.into_iter().map(|u| format!("  WAITED IN VAIN {u}")));
    assert!(
        failures.is_empty(),
        "{} undocumented differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `etcdctl` with carol's client certificate (CN `carol`).
macro_rules! carol {
    ($args:literal) => {
        concat!("--cert={certs}/carol.crt --key={certs}/carol.key ", $args)
    };
}
/// `etcdctl` with a client certificate whose CN is `root`.
macro_rules! root_cert {
    ($args:literal) => {
        concat!("--cert={certs}/root.crt --key={certs}/root.key ", $args)
    };
}

const TXN_CAROL_ALLOWED: &str = "value(\"c/1\") = \"one\"\n\nput c/t 1\n\nget pub/a\n\n";
const TXN_CAROL_DENIED: &str = "value(\"c/1\") = \"one\"\n\nput c/t 2\n\nget other\n\n";

/// After [`AUTH_SCRIPT`] (auth on), with etcdctl's default client certificate of CN
/// `etcdctl`, which names no user: certificate users, restricted to a prefix.
const CN_SCRIPT: &[Step] = &[
    Run("get pub/a"),
    Run("--user=root:rootpw user add carol:cpw"),
    Run("--user=root:rootpw role add c-rw"),
    Run("--user=root:rootpw role grant-permission c-rw --prefix=true readwrite c/"),
    Run("--user=root:rootpw role grant-permission c-rw read pub/a"),
    Run("--user=root:rootpw user grant-role carol c-rw"),
    Run(carol!("put c/1 one")),
    Run(carol!("get c/ --prefix")),
    Run(carol!("get pub/a")),
    Run(carol!("put pub/a 3")),
    Run(carol!("get other")),
    Stdin(carol!("txn"), TXN_CAROL_ALLOWED),
    Stdin(carol!("txn"), TXN_CAROL_DENIED),
    Run(carol!("del c/1")),
    Run(carol!("del other")),
    Spawn("w-carol-denied", carol!("watch other")),
    Until(Ended("w-carol-denied")),
    Stop("w-carol-denied"),
    Spawn("w-carol", carol!("watch c/w --prefix --rev 1")),
    Run(root_cert!("put c/w1 x")),
    Until(Lines("w-carol", 3)),
    Stop("w-carol"),
    Run(carol!("lease grant 100")),
    Run(carol!("user list")),
    Run(carol!("defrag")),
    // A certificate named root is root; a token still wins over the certificate.
    Run(root_cert!("user list")),
    Run(root_cert!("put anywhere 1")),
    Run(carol!("--user=bob:bpw get c/t")),
    Run(root_cert!("--user=bob:bpw get c/t")),
    // Revoked, then deleted: the certificate no longer opens anything.
    Run("--user=root:rootpw user revoke-role carol c-rw"),
    Run(carol!("get c/t")),
    Run("--user=root:rootpw user delete carol"),
    Run(carol!("get pub/a")),
    // A certificate of another CA, named root, never gets past the handshake.
    Run("--cert={certs}/stranger.crt --key={certs}/stranger.key get pub/a"),
];

/// The certificates of the TLS run, in one directory: a CA; the members' server and
/// peer certificates; client certificates named `etcdctl` (no user), `carol` and
/// `root`; and `stranger` (CN root) from another CA.
fn security_certs(dir: &Path) -> tls::generate::TestCa {
    let _ = std::fs::remove_dir_all(dir);
    let ca = tls::generate::TestCa::create(dir, "ca").unwrap();
    let hosts = ["127.0.0.1", "localhost"];
    ca.issue(dir, "server", "server", &hosts).unwrap();
    ca.issue(dir, "peer", "peer", &hosts).unwrap();
    for cn in ["etcdctl", "carol", "root"] {
        ca.issue(dir, cn, cn, &[]).unwrap();
    }
    let other = tls::generate::TestCa::create(dir, "other-ca").unwrap();
    other.issue(dir, "stranger", "root", &[]).unwrap();
    ca
}

/// Mutual TLS on both ports (peers must be named `peer`), auth flags as above.
fn security_flags(dir: &Path) -> Vec<String> {
    let f = |name: &str| dir.join(name).display().to_string();
    let pairs = [
        ("--cert-file", f("server.crt")),
        ("--key-file", f("server.key")),
        ("--trusted-ca-file", f("ca.crt")),
        ("--peer-cert-file", f("peer.crt")),
        ("--peer-key-file", f("peer.key")),
        ("--peer-trusted-ca-file", f("ca.crt")),
        ("--peer-cert-allowed-cn", "peer".to_string()),
        ("--auth-token-ttl", TOKEN_TTL_SECS.to_string()),
        ("--bcrypt-cost", "4".to_string()),
    ];
    let flags = pairs.into_iter().map(|(k, v)| format!("{k}={v}"));
    flags.chain(["--client-cert-auth".into(), "--peer-client-cert-auth".into()]).collect()
}

/// Our client's TLS, with the certificate of `cn`.
fn client_tls(dir: &Path, cn: &str) -> tls::ClientTls {
    tls::ClientTls::new(tls::ClientFiles {
        ca_file: dir.join("ca.crt"),
        cert_and_key: Some((dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")))),
        flags: ["--cacert", "--cert", "--key"],
    })
    .unwrap()
}

/// Clears [`ETCDCTL_TLS`] however the test ends.
struct TlsArgsGuard;
impl Drop for TlsArgsGuard {
    fn drop(&mut self) {
        *ETCDCTL_TLS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[test]
fn the_security_script_over_mutual_tls_with_certificate_users_matches_etcd() {
    if !common::have("etcdctl", "version") || !common::have("etcd", "--version") {
        println!("\n*** SKIPPED etcd_compat TLS + auth: needs `etcd` and `etcdctl` 3.4 ***\n");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("raftkv-security-certs-{}", std::process::id()));
    security_certs(&dir);
    let f = |name: &str| dir.join(name).display().to_string();
    let args = vec![
        format!("--cacert={}", f("ca.crt")),
        format!("--cert={}", f("etcdctl.crt")),
        format!("--key={}", f("etcdctl.key")),
    ];
    let certs_dir = dir.display().to_string();
    *ETCDCTL_TLS.lock().unwrap() = Some(EtcdctlTls { args, certs_dir });
    let _clear = TlsArgsGuard;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let flags = security_flags(&dir);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let start = |kind| {
        // The waits read as root (its certificate): they must pass once auth is on.
        Cluster::start_tls(kind, &rt, "compat-security", &flags, Some(client_tls(&dir, "root")))
    };
    let (etcd, raftkv) = (start("etcd"), start("raftkv"));
    let script: Vec<Step> = AUTH_SCRIPT.iter().chain(CN_SCRIPT).copied().collect();
    let mut transcripts = Vec::new();
    let mut unseen = Vec::new();
    for cluster in [&etcd, &raftkv] {
        let (t, not_seen) = run_script(cluster, &script);
        unseen.extend(not_seen);
        transcripts.push(normalised(cluster, &script, t));
    }
    let mut failures = compare(&transcripts[0], &transcripts[1]);
    // Token expiry over TLS; the request without a token runs as the `etcdctl`
    // certificate, which names no user.
    let mut etcd = etcd;
    let mut raftkv = raftkv;
    etcd.members.set_client_tls(client_tls(&dir, "etcdctl"));
    raftkv.members.set_client_tls(client_tls(&dir, "etcdctl"));
    let (e, r) = rt.block_on(async { tokio::join!(token_expiry(&etcd), token_expiry(&raftkv)) });
    failures.extend(compare_grpc(&e, &r));
    failures.extend(unseen.into_iter().map(|u| format!("  WAITED IN VAIN {u}")));
    assert!(
        failures.is_empty(),
        "{} undocumented differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
