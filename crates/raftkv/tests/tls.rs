//! TLS on both ports (issue 10): a 3-member cluster with mutual TLS on the client and
//! the peer port, reached by our client, our CLI and etcdctl 3.4 over `https://`;
//! clients and peers without an acceptable certificate refused at the handshake;
//! certificates rotated on disk without a restart; etcdctl's transcript against a
//! real etcd 3.4 on the same certificates; and a member serving an `http://` and an
//! `https://` client URL side by side, with HTTP/1.1 (`/health`, `/version`) over TLS.
//!
//! Certificates are made in-process (`tls::generate`, rcgen). The etcdctl parts print
//! SKIPPED and pass without `etcdctl`; the side-by-side without `etcd`.

mod common;

use common::{etcdctl, have, raftkv, ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tls::generate::{Issued, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The common name every member's peer certificate has (`--peer-cert-allowed-cn`).
const PEER_CN: &str = "raftkv-peer";

struct Certs {
    dir: PathBuf,
    ca: TestCa,
    server: Issued,
    peer: Issued,
    client: Issued,
    stranger: Issued,
    wrong_peer: Issued,
    /// A peer certificate as `peer` (CN, hosts, usages), issued by another CA.
    stranger_peer: Issued,
    /// That other CA's certificate.
    other_ca_file: PathBuf,
}

fn certs(tag: &str) -> Certs {
    let dir = std::env::temp_dir().join(format!("raftkv-certs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = TestCa::create(&dir, "ca").unwrap();
    let other_ca = TestCa::create(&dir, "other-ca").unwrap();
    let hosts = ["127.0.0.1", "localhost"];
    Certs {
        server: ca.issue(&dir, "server", "raftkv-server", &hosts).unwrap(),
        peer: ca.issue(&dir, "peer", PEER_CN, &hosts).unwrap(),
        client: ca.issue(&dir, "client", "root", &[]).unwrap(),
        stranger: other_ca.issue(&dir, "stranger", "root", &[]).unwrap(),
        wrong_peer: ca.issue(&dir, "wrong-peer", "intruder", &hosts).unwrap(),
        stranger_peer: other_ca.issue(&dir, "stranger-peer", PEER_CN, &hosts).unwrap(),
        other_ca_file: other_ca.cert_file.clone(),
        dir,
        ca,
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Mutual TLS on both ports, peers restricted to [`PEER_CN`].
fn server_flags(c: &Certs) -> Vec<String> {
    let ca = p(&c.ca.cert_file);
    [
        ("--cert-file", p(&c.server.cert_file)),
        ("--key-file", p(&c.server.key_file)),
        ("--trusted-ca-file", ca.clone()),
        ("--peer-cert-file", p(&c.peer.cert_file)),
        ("--peer-key-file", p(&c.peer.key_file)),
        ("--peer-trusted-ca-file", ca),
        ("--peer-cert-allowed-cn", PEER_CN.to_string()),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_string(), v])
    .chain(["--client-cert-auth".into(), "--peer-client-cert-auth".into()])
    .collect()
}

fn client_tls(ca: &Path, cert: Option<&Issued>) -> tls::ClientTls {
    tls::ClientTls::new(tls::ClientFiles {
        ca_file: ca.to_path_buf(),
        cert_and_key: cert.map(|c| (c.cert_file.clone(), c.key_file.clone())),
        flags: ["--cacert", "--cert", "--key"],
    })
    .unwrap()
}

fn start(tag: &str, c: &Certs) -> TestCluster {
    let flags = server_flags(c);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::start_spec(ClusterSpec::raftkv(tag, &flags).https());
    cluster.set_client_tls(client_tls(&c.ca.cert_file, Some(&c.client)));
    cluster
}

/// Whether a TLS connection to `url` with `tls` gets as far as the server's first
/// HTTP/2 bytes (its SETTINGS): a refused certificate fails the handshake, which TLS 1.3
/// reports to the client at its first read. Returns the server certificate's CN.
async fn handshake(tls: &tls::ClientTls, url: &str) -> Result<String, String> {
    let uri: tonic::codegen::http::Uri = url.parse().unwrap();
    let attempt = async {
        let mut conn = tls.connect(&uri).await?;
        conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await?;
        let mut first = [0u8; 9];
        conn.read_exact(&mut first).await?;
        let cert = conn.get_ref().1.peer_certificates().expect("server certificate")[0].clone();
        Ok::<_, std::io::Error>(tls::common_name(&cert).unwrap_or_default())
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in 10 s".into()),
    }
}

fn etcdctl_tls(c: &Certs, cert: Option<&Issued>, endpoint: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = etcdctl();
    cmd.args(["--endpoints", endpoint, "--dial-timeout=2s", "--command-timeout=5s"]);
    cmd.arg(format!("--cacert={}", p(&c.ca.cert_file)));
    if let Some(cert) = cert {
        cmd.arg(format!("--cert={}", p(&cert.cert_file)));
        cmd.arg(format!("--key={}", p(&cert.key_file)));
    }
    let out = cmd.args(args).output().expect("running etcdctl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_cluster_serves_clients_with_certificates_and_refuses_others() {
    let c = certs("mtls");
    let cluster = start("tls-mtls", &c);
    cluster.wait_ready().await;

    // Our client library over https://, through any member.
    let mut client = cluster.client();
    client.put(b"greeting", b"hello").await.unwrap();
    let got = client.get(b"greeting", false).await.unwrap().unwrap();
    assert_eq!(&got.value[..], b"hello");

    // Our CLI with etcdctl's flags.
    let endpoints = cluster.endpoints().join(",");
    let tls_args = [
        format!("--cacert={}", p(&c.ca.cert_file)),
        format!("--cert={}", p(&c.client.cert_file)),
        format!("--key={}", p(&c.client.key_file)),
    ];
    let mut args = vec!["get", "greeting", "--endpoints", &endpoints];
    args.extend(tls_args.iter().map(String::as_str));
    let (ok, out, err) = raftkv(&args);
    assert!(ok, "raftkv get over TLS: {err}");
    assert_eq!(out, "greeting\nhello\n");
    let (ok, _, err) = raftkv(&["get", "greeting", "--endpoints", &endpoints, "--timeout-secs=2"]);
    assert!(!ok && err.contains("--cacert"), "https without a CA is explained: {err}");

    // Refused at the handshake: no certificate, another CA's certificate.
    let url = cluster.endpoint(0);
    let with = |cert: Option<&Issued>| client_tls(&c.ca.cert_file, cert);
    assert_eq!(handshake(&with(Some(&c.client)), &url).await, Ok("raftkv-server".into()));
    let none = handshake(&with(None), &url).await;
    assert!(none.is_err(), "a client without a certificate is refused: {none:?}");
    let foreign = handshake(&with(Some(&c.stranger)), &url).await;
    assert!(foreign.is_err(), "a certificate from another CA is refused: {foreign:?}");

    // The peer port: the peer certificate passes, a certificate of this CA with
    // another CN does not (--peer-cert-allowed-cn), nor a client with none.
    let peer = cluster.peer_url(1);
    assert_eq!(handshake(&with(Some(&c.peer)), &peer).await, Ok(PEER_CN.into()));
    let wrong = handshake(&with(Some(&c.wrong_peer)), &peer).await;
    assert!(wrong.is_err(), "a peer with a wrong CN is refused: {wrong:?}");
    // Said once, by the listener, with both names (the verifier used to say it too).
    let cn = ["rejected connection from 127.0.0.1:", "common name", "intruder", "cert-allowed-cn"];
    let line = wait_log_line(&cluster, 1, &cn).await;
    assert!(line.contains(&format!("allows (\"{PEER_CN}\")")), "{line}");
    assert_eq!(log_lines(&cluster, 1, &["cert-allowed-cn"]), vec![line], "one line per refusal");
    assert!(handshake(&with(None), &peer).await.is_err(), "a peer without a certificate");

    // Still serving after the refusals.
    client.put(b"after", b"refusals").await.unwrap();

    if !have("etcdctl", "version") {
        eprintln!("SKIPPED the etcdctl part: etcdctl is not installed");
        return;
    }
    let all = cluster.endpoints().join(",");
    let (ok, out) = etcdctl_tls(&c, Some(&c.client), &url, &["put", "k", "v"]);
    assert!(ok && out == "OK\n", "{out}");
    let (ok, out) = etcdctl_tls(&c, Some(&c.client), &url, &["get", "k"]);
    assert!(ok && out == "k\nv\n", "{out}");
    let (ok, out) = etcdctl_tls(&c, Some(&c.client), &all, &["endpoint", "status"]);
    assert!(ok && out.lines().count() == 3, "{out}");
    assert!(out.lines().all(|l| l.starts_with("https://127.0.0.1:")), "{out}");
    let (ok, out) = etcdctl_tls(&c, None, &url, &["get", "k"]);
    assert!(!ok, "etcdctl without a client certificate is refused: {out}");
    let (ok, out) = etcdctl_tls(&c, Some(&c.stranger), &url, &["get", "k"]);
    assert!(!ok, "etcdctl with another CA's certificate is refused: {out}");
}

/// Replaces `target`'s certificate and key with a new pair (same CA) named `cn`.
fn rotate(c: &Certs, target: &Issued, cn: &str) {
    let name = target.cert_file.file_stem().unwrap().to_str().unwrap();
    let issued = c.ca.issue(&c.dir, name, cn, &["127.0.0.1", "localhost"]).unwrap();
    assert_eq!(&issued, target, "replaced in place");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificates_are_served_to_new_connections_without_a_restart() {
    let c = certs("rotate");
    let cluster = start("tls-rotate", &c);
    cluster.wait_ready().await;
    let pids: Vec<_> = (0..3).map(|i| cluster.pid(i)).collect();
    let tls = client_tls(&c.ca.cert_file, Some(&c.client));
    let url = cluster.endpoint(0);
    assert_eq!(handshake(&tls, &url).await, Ok("raftkv-server".into()));

    rotate(&c, &c.server, "raftkv-server-2");
    rotate(&c, &c.peer, PEER_CN);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if handshake(&tls, &url).await == Ok("raftkv-server-2".into()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate is not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same processes, and a fresh client still works.
    assert_eq!(pids, (0..3).map(|i| cluster.pid(i)).collect::<Vec<_>>());
    let mut client = cluster.client();
    client.put(b"rotated", b"yes").await.unwrap();
}

/// etcdctl's log line with its time and client id (which differ) masked.
fn mask_log_line(line: &str) -> String {
    let mut out = line.to_string();
    for (start, end) in [("\"ts\":\"", "\""), ("endpoint://client-", "/")] {
        if let Some(from) = out.find(start).map(|i| i + start.len()) {
            if let Some(len) = out[from..].find(end) {
                out.replace_range(from..from + len, "*");
            }
        }
    }
    out
}

/// etcdctl's lines with the ports, times and client ids (which differ) masked.
fn transcript(c: &Certs, url: &str) -> Vec<String> {
    let port = url.rsplit(':').next().unwrap().to_string();
    let steps: [(Option<&Issued>, &[&str]); 7] = [
        (Some(&c.client), &["put", "tls-key", "tls-value"]),
        (Some(&c.client), &["get", "tls-key"]),
        (Some(&c.client), &["get", "tls", "--prefix", "--keys-only"]),
        (Some(&c.client), &["del", "tls-key"]),
        (Some(&c.client), &["get", "tls-key"]),
        (None, &["get", "tls-key"]),
        (Some(&c.stranger), &["put", "a", "b"]),
    ];
    let mut lines = Vec::new();
    for (cert, args) in steps {
        let (ok, out) = etcdctl_tls(c, cert, url, args);
        lines.push(format!("$ etcdctl {} (client cert: {})", args.join(" "), cert.is_some()));
        lines.extend(out.lines().map(|l| mask_log_line(&l.replace(&port, "PORT"))));
        lines.push(format!("exit ok: {ok}"));
    }
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_over_mutual_tls_sees_raftkv_as_it_sees_etcd() {
    if !have("etcd", "--version") || !have("etcdctl", "version") {
        eprintln!("SKIPPED: etcd and etcdctl are needed for the side-by-side");
        return;
    }
    let c = certs("side");
    let flags = server_flags(&c);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let etcd = TestCluster::start_spec(ClusterSpec::etcd("tls-etcd", &flags).https());
    let etcd_url = etcd.endpoint(0);
    common::wait_for("etcd over TLS", Duration::from_secs(30), Duration::from_millis(100), || {
        let ready = etcdctl_tls(&c, Some(&c.client), &etcd_url, &["get", "x"]).0;
        async move { ready.then_some(()) }
    })
    .await;
    let expected = transcript(&c, &etcd_url);
    drop(etcd);

    let raftkv = start("tls-side", &c);
    raftkv.wait_ready().await;
    let got = transcript(&c, &raftkv.endpoint(0));
    assert_eq!(got, expected, "\nraftkv:\n{}\netcd:\n{}", got.join("\n"), expected.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_runs_over_https_to_the_leader_and_spread_over_every_member() {
    let c = certs("bench");
    let cluster = start("tls-bench", &c);
    cluster.wait_ready().await;
    let endpoints = cluster.endpoints().join(",");
    let tls_args = [
        format!("--cacert={}", p(&c.ca.cert_file)),
        format!("--cert={}", p(&c.client.cert_file)),
        format!("--key={}", p(&c.client.key_file)),
    ];
    for spread in [false, true] {
        let mut args = vec!["bench", "--endpoints", &endpoints, "--quiet", "--count=200"];
        args.extend(["--clients=4", "--connections=3", "--keys=50", "--duration-secs=60"]);
        args.extend(tls_args.iter().map(String::as_str));
        if spread {
            args.push("--spread");
        }
        let (ok, out, err) = raftkv(&args);
        assert!(ok, "bench over https (spread {spread}): {err}");
        // --count stops the clients once 200 completed; those in flight finish too.
        let ops: u64 = out
            .split_once("B: ")
            .and_then(|(_, rest)| rest.split_once(" ops in"))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0);
        assert!(ops >= 200 && out.contains("errors 0"), "{out}");
    }
    // Without the CA, https:// endpoints are explained, not "no leader".
    let (ok, _, err) = raftkv(&["bench", "--endpoints", &endpoints, "--count=1", "--spread"]);
    assert!(!ok && err.contains("--cacert"), "https without a CA is explained: {err}");
}

/// etcdctl as root (the client certificate's CN, which is the user once auth is on)
/// against `endpoint`; whether it succeeded and what it printed.
fn etcdctl_root(c: &Certs, endpoint: &str, args: &[&str]) -> (bool, String) {
    etcdctl_tls(c, Some(&c.client), endpoint, args)
}

/// `etcdctl member add NAME --peer-urls=PEER` over https, retried while the cluster is
/// not yet healthy by etcd's rule (connected to every voter for 5 s); the `ETCD_*` lines
/// it printed.
async fn member_add_over_https(c: &Certs, endpoint: &str, name: &str, peer: &str) -> String {
    let peer_flag = format!("--peer-urls={peer}");
    common::wait_for("member add", Duration::from_secs(30), Duration::from_millis(200), || {
        let (ok, out) = etcdctl_root(c, endpoint, &["member", "add", name, &peer_flag]);
        assert!(ok || out.contains("unhealthy cluster"), "member add {name}: {out}");
        async move { ok.then_some(out) }
    })
    .await
}

/// A member joins a cluster that runs with mutual TLS on both ports and auth on,
/// exactly as an operator does it with etcdctl 3.4 (issue 9 with issue 10): `member
/// add` over https prints the `ETCD_*` lines, a 4th member started from them with an
/// empty data dir and https peer and client URLs finds its ids through the members'
/// TLS peer ports, takes its first state by snapshot, serves a linearizable read of a
/// key written before it existed, publishes itself (`member list`: started), and
/// leaves again with `member remove`.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_member_joins_over_https_with_auth_on_and_catches_up_by_snapshot() {
    if !have("etcdctl", "version") {
        eprintln!("SKIPPED: etcdctl is needed to add the member");
        return;
    }
    let c = certs("join");
    let mut cluster = start("tls-join", &c);
    cluster.wait_ready().await;
    let first = cluster.endpoint(0);
    for args in [&["user", "add", "root:rootpw"][..], &["user", "grant-role", "root", "root"]] {
        let (ok, out) = etcdctl_root(&c, &first, args);
        assert!(ok, "etcdctl {args:?}: {out}");
    }
    let (ok, out) = etcdctl_root(&c, &first, &["auth", "enable"]);
    assert!(ok && out == "Authentication Enabled\n", "{out}");
    let (ok, out) = etcdctl_root(&c, &first, &["put", "before-join", "yes"]);
    assert!(ok && out == "OK\n", "{out}");
    let (ok, out) = etcdctl_root(&c, &first, &["--user=root:wrong", "get", "before-join"]);
    assert!(!ok && out.contains("authentication failed"), "auth is on: {out}");

    let new = cluster.plan_member("m4");
    let peer = cluster.peer_url(new);
    let printed = member_add_over_https(&c, &first, "m4", &peer).await;
    let env = common::member_add_env(&printed);
    let var = |k: &str| env.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone());
    assert_eq!(var("ETCD_NAME").as_deref(), Some("m4"), "{printed}");
    assert_eq!(var("ETCD_INITIAL_CLUSTER_STATE").as_deref(), Some("existing"), "{printed}");
    assert_eq!(var("ETCD_INITIAL_ADVERTISE_PEER_URLS"), Some(peer.clone()), "{printed}");
    let listed = var("ETCD_INITIAL_CLUSTER").unwrap_or_default();
    assert_eq!(listed.matches("=https://127.0.0.1:").count(), 4, "{printed}");
    cluster.set_join_env(new, env);
    cluster.spawn(new);

    // Linearizable (etcdctl's default), through the new member only, as root.
    let own = cluster.endpoint(new);
    common::wait_for("m4 reads", Duration::from_secs(60), Duration::from_millis(200), || {
        let (ok, out) = etcdctl_root(&c, &own, &["get", "before-join"]);
        async move { (ok && out == "before-join\nyes\n").then_some(()) }
    })
    .await;
    assert!(cluster.snapshot_files(new) >= 1, "m4's first state came by snapshot");
    let started = format!(", started, m4, {peer}, {own}, false");
    let line =
        common::wait_for("m4 listed", Duration::from_secs(30), Duration::from_millis(200), || {
            let (ok, out) = etcdctl_root(&c, &own, &["member", "list"]);
            assert!(ok, "member list: {out}");
            let line = out.lines().find(|l| l.ends_with(&started)).map(str::to_string);
            async move { line }
        })
        .await;

    let id = line.split(',').next().unwrap().to_string();
    let (ok, out) = etcdctl_root(&c, &first, &["member", "remove", &id]);
    // `member list` prints ids as `%x`, `member remove` as `%16x` (space-padded).
    let id16 = format!("{:16x}", u64::from_str_radix(&id, 16).expect("a hex member id"));
    assert!(ok && out.starts_with(&format!("Member {id16} removed from cluster ")), "{out}");
    let status =
        common::wait_for("m4 exits", Duration::from_secs(30), Duration::from_millis(50), || {
            let status = cluster.exited(new);
            async move { status }
        })
        .await;
    assert!(!status.success(), "a removed member exits non-zero: {status}");
    let (ok, out) = etcdctl_root(&c, &first, &["member", "list"]);
    assert!(ok && out.lines().count() == 3 && !out.contains("m4"), "{out}");
    let (ok, out) = etcdctl_root(&c, &first, &["get", "before-join"]);
    assert!(ok && out == "before-join\nyes\n", "{out}");
}

/// Kills a member started by hand when the test ends, failing or not.
struct Member(std::process::Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/metrics`'s content type, as etcd's Prometheus handler sends it.
const METRICS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An HTTP/1.1 answer: status code, content type, body.
#[derive(Debug, PartialEq, Eq)]
struct Http1Answer {
    code: u16,
    content_type: String,
    body: String,
}

/// `GET path` as HTTP/1.1 on `stream` (one request, then the server closes).
async fn http1_get<S>(stream: S, path: &str) -> std::io::Result<Http1Answer>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    http1_ask(stream, "GET", path).await.map(|(answer, _)| answer)
}

/// `method path` as HTTP/1.1 on `stream` (one request, then the server closes): the
/// answer and its head (status line and headers) as sent.
async fn http1_ask<S>(
    mut stream: S,
    method: &str,
    path: &str,
) -> std::io::Result<(Http1Answer, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request =
        format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    // A server that closes without TLS's close_notify still said all it had to say.
    if raw.is_empty() {
        read.map_err(|_| std::io::Error::other("no answer in 10 s"))??;
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let bad = || std::io::Error::other(format!("not an HTTP/1.1 answer: {text:?}"));
    let status = head.strip_prefix("HTTP/1.1 ").ok_or_else(bad)?;
    let code = status.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let content_type = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map_or(String::new(), |(_, v)| v.trim().to_string());
    Ok((Http1Answer { code, content_type, body: body.to_string() }, head.to_string()))
}

/// `GET path` over TLS on `port`, offering only ALPN `http/1.1` (`curl --http1.1`): the
/// protocol the server agreed to and its answer.
async fn https1_get(ca: &Path, port: u16, path: &str) -> Result<(String, Http1Answer), String> {
    https1_ask(ca, port, "GET", path).await.map(|(alpn, answer, _)| (alpn, answer))
}

/// `method path` over TLS on `port`, offering only ALPN `http/1.1` (`curl --http1.1`):
/// the protocol the server agreed to, its answer and the answer's head.
async fn https1_ask(
    ca: &Path,
    port: u16,
    method: &str,
    path: &str,
) -> Result<(String, Http1Answer, String), String> {
    let files = tls::ClientFiles { ca_file: ca.into(), cert_and_key: None, flags: ["--cacert"; 3] };
    let mut config = (*files.build().map_err(|e| e.0)?).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let stream = connector.connect(name, tcp).await?;
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
        let (answer, head) = http1_ask(stream, method, path).await?;
        Ok::<_, std::io::Error>((String::from_utf8_lossy(&alpn).into_owned(), answer, head))
    };
    attempt.await.map_err(|e| e.to_string())
}

/// `GET path` in plaintext HTTP/1.1 on `port`.
async fn http1_get_plain(port: u16, path: &str) -> Result<Http1Answer, String> {
    let tcp =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    http1_get(tcp, path).await.map_err(|e| e.to_string())
}

/// One member with an `http://` client URL on port `plain` and an `https://` one on
/// `secure` (and `extra` flags), waited for until `/health` on `plain` is 200.
async fn start_mixed_member(c: &Certs, plain: u16, secure: u16, extra: &[String]) -> Member {
    let peer = common::free_port();
    let (plain_url, secure_url) =
        (format!("http://127.0.0.1:{plain}"), format!("https://127.0.0.1:{secure}"));
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data_dir = c.dir.join("m1");
    // etcd's flags for it, as an operator writes them (etcd also wants
    // --advertise-client-urls; raftkv advertises every listen URL without it).
    let member = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["server", "--name", "m1", "--data-dir", &p(&data_dir)])
        .args(["--listen-peer-urls", &peer_url, "--initial-cluster", &format!("m1={peer_url}")])
        .arg(format!("--listen-client-urls={plain_url},{secure_url}"))
        .args(["--cert-file", &p(&c.server.cert_file), "--key-file", &p(&c.server.key_file)])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(c.dir.join("m1.log")).unwrap())
        .spawn()
        .unwrap();
    let member = Member(member);
    let healthy = move || async move {
        http1_get_plain(plain, "/health").await.ok().filter(|a| a.code == 200)
    };
    common::wait_for(
        "a leader, on the http:// URL",
        Duration::from_secs(30),
        Duration::from_millis(50),
        healthy,
    )
    .await;
    member
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_serves_an_http_and_an_https_client_url_side_by_side() {
    let c = certs("mixed");
    let (plain, secure) = (common::free_port(), common::free_port());
    let (plain_url, secure_url) =
        (format!("http://127.0.0.1:{plain}"), format!("https://127.0.0.1:{secure}"));
    let _member = start_mixed_member(&c, plain, secure, &[]).await;

    // HTTP/1.1 inside TLS on the https:// URL, as `curl --http1.1` asks for it.
    let ca = c.ca.cert_file.clone();
    let (alpn, health) = https1_get(&ca, secure, "/health").await.unwrap();
    assert_eq!(alpn, "http/1.1");
    assert_eq!((health.code, health.body.as_str()), (200, "{\"health\":\"true\"}"));
    // etcd's /version, the same on both URLs; the version is Status's.
    let version = format!(
        "{{\"etcdserver\":\"3.4.0+raftkv.{}\",\"etcdcluster\":\"3.4.0\"}}",
        env!("CARGO_PKG_VERSION")
    );
    let expected =
        Http1Answer { code: 200, content_type: "application/json".into(), body: version };
    assert_eq!(https1_get(&ca, secure, "/version").await.unwrap().1, expected);
    assert_eq!(http1_get_plain(plain, "/version").await.unwrap(), expected);
    let (_, metrics) = https1_get(&ca, secure, "/metrics").await.unwrap();
    assert!(metrics.body.contains("\n# TYPE etcd_server_has_leader gauge\n"), "{metrics:?}");
    // etcd's JSON gateway on the https:// URL too (`curl --http1.1 https://.../v3/...`;
    // no body is the empty request, as etcd's).
    let (alpn, status, _) =
        https1_ask(&ca, secure, "POST", "/v3/maintenance/status").await.unwrap();
    assert_eq!((alpn.as_str(), status.code), ("http/1.1", 200), "{status:?}");
    assert_eq!(status.content_type, "application/json");
    assert!(status.body.contains(",\"version\":\"3.4.0+raftkv."), "{status:?}");
    let (_, no_key, _) = https1_ask(&ca, secure, "POST", "/v3beta/kv/put").await.unwrap();
    let refused = "etcdserver: key is not provided";
    let body = format!("{{\"error\":\"{refused}\",\"message\":\"{refused}\",\"code\":3}}");
    assert_eq!((no_key.code, no_key.body), (400, body));
    // Each URL with its own scheme: no plaintext on the https:// one, no TLS on the other.
    let e = http1_get_plain(secure, "/health").await;
    assert!(e.is_err(), "plaintext HTTP on the https:// URL: {e:?}");
    let e = https1_get(&ca, plain, "/health").await;
    assert!(e.is_err(), "TLS on the http:// URL: {e:?}");

    // Our CLI over each URL, and both in one --endpoints.
    let cacert = format!("--cacert={}", p(&ca));
    let (ok, out, err) = raftkv(&["put", "mixed", "plain", "--endpoints", &plain_url]);
    assert!(ok, "raftkv put over http://: {err}");
    assert!(out.starts_with("OK"), "{out}");
    let (ok, out, err) = raftkv(&["get", "mixed", "--endpoints", &secure_url, &cacert]);
    assert!(ok && out == "mixed\nplain\n", "raftkv get over https://: {out}{err}");
    let both = format!("{plain_url},{secure_url}");
    let (ok, out, err) = raftkv(&["status", "--endpoints", &both, &cacert]);
    assert!(ok, "raftkv status over both: {err}");
    for url in [&plain_url, &secure_url] {
        assert!(out.lines().any(|l| l.starts_with(url.as_str())), "{url}: {out}");
    }

    if !have("etcdctl", "version") {
        eprintln!("SKIPPED the etcdctl part: etcdctl is not installed");
        return;
    }
    let (ok, out) = etcdctl_tls(&c, None, &secure_url, &["put", "mixed", "secure"]);
    assert!(ok && out == "OK\n", "etcdctl put over https://: {out}");
    let (ok, out) = etcdctl_tls(&c, None, &plain_url, &["get", "mixed"]);
    assert!(ok && out == "mixed\nsecure\n", "etcdctl get over http://: {out}");
    // The member table carries both URLs, each with its scheme, as etcd's does.
    let (ok, out) = etcdctl_tls(&c, None, &both, &["member", "list"]);
    assert!(ok && out.trim_end().ends_with(&format!(", {plain_url},{secure_url}, false")), "{out}");
    let (ok, out) = etcdctl_tls(&c, None, &both, &["endpoint", "health"]);
    assert!(ok && out.lines().filter(|l| l.contains("is healthy")).count() == 2, "{out}");
}

/// Operator pass: `curl http://127.0.0.1:2379/foo` was answered as gRPC (200 with grpc
/// headers) and `/health` differed from etcd's in content type and a trailing newline.
/// Now every plain HTTP request (not HTTP/2 with a gRPC content type) to a client URL,
/// over TLS too, and to `--listen-metrics-urls` is answered as etcd 3.4's answers it,
/// compared by hand with `curl -si` (see the README for the headers that still differ).
#[tokio::test(flavor = "multi_thread")]
async fn plain_http_requests_are_answered_as_etcd_3_4_answers_them() {
    const TEXT: &str = "text/plain; charset=utf-8";
    let c = certs("http-answers");
    let (plain, secure, metrics) = (common::free_port(), common::free_port(), common::free_port());
    let metrics_flag = format!("--listen-metrics-urls=http://127.0.0.1:{metrics}");
    let _member = start_mixed_member(&c, plain, secure, &[metrics_flag]).await;
    let ca = c.ca.cert_file.clone();
    let ask = |port: u16, method: &'static str, path: &'static str| {
        let ca = ca.clone();
        async move {
            let answer = if port == secure {
                https1_ask(&ca, port, method, path).await.map(|(_, a, head)| (a, head))
            } else {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
                let tcp = tcp.map_err(|e| e.to_string())?;
                http1_ask(tcp, method, path).await.map_err(|e| e.to_string())
            };
            answer.map(|(a, head)| (a, head.to_ascii_lowercase()))
        }
    };
    let answer = |code, content_type: &str, body: &str| Http1Answer {
        code,
        content_type: content_type.into(),
        body: body.into(),
    };
    let health = answer(200, TEXT, "{\"health\":\"true\"}");
    let not_found = answer(404, TEXT, "404 page not found\n");
    let not_allowed = answer(405, TEXT, "Method Not Allowed\n");
    for (port, url) in [(plain, "http://"), (secure, "https://"), (metrics, "metrics")] {
        let get = |path| ask(port, "GET", path);
        assert_eq!(get("/health").await.unwrap().0, health, "{url}");
        // The JSON gateway's routes take POST: a GET is etcd's 405 on a client URL; the
        // metrics URL has no gateway.
        let gateway_get = if url == "metrics" { &not_found } else { &not_allowed };
        for (path, want) in [
            ("/foo", &not_found),
            ("/", &not_found),
            ("/health/", &not_found),
            ("/v3/kv/range", gateway_get),
        ] {
            let (got, head) = get(path).await.unwrap();
            assert_eq!(&got, want, "{url} {path}");
            assert!(head.contains("\r\nx-content-type-options: nosniff\r\n"), "{url}: {head}");
            // etcd's CORS headers (default --cors, *) on every answer of a client URL,
            // 404 and 405 too; none on the metrics URL.
            let cors = head.contains("\r\naccess-control-allow-origin: *\r\n");
            assert_eq!(cors, url != "metrics", "{url} {path}: {head}");
        }
        let (got, head) = ask(port, "POST", "/health").await.unwrap();
        assert_eq!(got, not_allowed, "{url}");
        assert!(head.contains("\r\nallow: get\r\n"), "{url}: {head}");
        // Any OPTIONS on a client URL is etcd's preflight: 200, empty, the CORS headers;
        // on the metrics URL it is not (etcd: /metrics answers it, /health is a 405).
        let (got, head) = ask(port, "OPTIONS", "/v3/kv/range").await.unwrap();
        if url == "metrics" {
            assert_eq!(got, not_found, "{url}");
        } else {
            assert_eq!(got, answer(200, "", ""), "{url}");
            assert!(head.contains("\r\ncontent-length: 0\r\n"), "{url}: {head}");
            let methods = "\r\naccess-control-allow-methods: post, get, options, put, delete\r\n";
            assert!(head.contains(methods), "{url}: {head}");
        }
        let (got, _) = ask(port, "POST", "/metrics").await.unwrap();
        assert_eq!((got.code, got.content_type.as_str()), (200, METRICS_TEXT), "{url}");
        assert!(got.body.contains("\n# TYPE etcd_server_has_leader gauge\n"), "{url}");
    }
    // /version on client URLs only, GET only.
    for port in [plain, secure] {
        let (got, _) = ask(port, "GET", "/version").await.unwrap();
        assert_eq!((got.code, got.content_type.as_str()), (200, "application/json"));
        assert!(!got.body.ends_with('\n'), "{got:?}");
        assert_eq!(ask(port, "PUT", "/version").await.unwrap().0, not_allowed);
    }
    assert_eq!(ask(metrics, "GET", "/version").await.unwrap().0, not_found);

    // gRPC still reaches tonic on both client URLs.
    let cacert = format!("--cacert={}", p(&c.ca.cert_file));
    let urls = [format!("http://127.0.0.1:{plain}"), format!("https://127.0.0.1:{secure}")];
    let (ok, out, err) = raftkv(&["status", "--endpoints", &urls.join(","), &cacert]);
    assert!(ok, "raftkv status over both: {err}");
    for url in &urls {
        assert!(out.lines().any(|l| l.starts_with(url.as_str())), "{url}: {out}");
    }
}

/// [`server_flags`] with another peer certificate and key, and another CA trusted for
/// peers.
fn flags_with_peer(c: &Certs, (cert, key): (&Path, &Path), peer_ca: &Path) -> Vec<String> {
    let mut flags = server_flags(c);
    for (flag, value) in
        [("--peer-cert-file", cert), ("--peer-key-file", key), ("--peer-trusted-ca-file", peer_ca)]
    {
        let at = flags.iter().position(|f| f == flag).expect("the flag is set") + 1;
        flags[at] = p(value);
    }
    flags
}

/// `member add` through the gRPC API over https, retried while the cluster is not yet
/// healthy by etcd's rule: plans member `name` with the `ETCD_*` settings `etcdctl
/// member add` prints. Returns its index.
async fn add_member(cluster: &mut TestCluster, name: &str) -> usize {
    let new = cluster.plan_member(name);
    let peer = cluster.peer_url(new);
    let api = pb::cluster_client::ClusterClient::new(cluster.channel(0));
    let req = pb::MemberAddRequest { peer_ur_ls: vec![peer.clone()], is_learner: false };
    let wait = Duration::from_secs(30);
    let added = common::wait_for("member add", wait, Duration::from_millis(200), || {
        let (mut api, req) = (api.clone(), req.clone());
        async move {
            match api.member_add(req).await {
                Ok(answer) => Some(answer.into_inner()),
                Err(s) if s.message().contains("unhealthy cluster") => None,
                Err(s) => panic!("member add {name}: {s:?}"),
            }
        }
    })
    .await;
    let id = added.member.expect("the new member").id;
    let cluster_flag: Vec<String> = added
        .members
        .iter()
        .map(|m| format!("{}={}", if m.id == id { name } else { &m.name }, m.peer_ur_ls[0]))
        .collect();
    cluster.set_join_env(
        new,
        vec![
            ("ETCD_NAME".into(), name.into()),
            ("ETCD_INITIAL_CLUSTER".into(), cluster_flag.join(",")),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS".into(), peer),
            ("ETCD_INITIAL_CLUSTER_STATE".into(), "existing".into()),
        ],
    );
    new
}

/// Starts member `i` and waits (up to `within`) for it to exit by itself; its status
/// and its log's `error:` line.
async fn start_and_wait_exit(
    cluster: &mut TestCluster,
    i: usize,
    within: Duration,
) -> (std::process::ExitStatus, String) {
    cluster.spawn(i);
    let status = common::wait_for("the member exits", within, Duration::from_millis(50), || {
        let status = cluster.exited(i);
        async move { status }
    })
    .await;
    let log = cluster.log(i);
    let line = log.lines().rev().find(|l| l.starts_with("error: ")).unwrap_or_default();
    (status, line.to_string())
}

/// Lines of member `i`'s log that contain every one of `parts`.
fn log_lines(cluster: &TestCluster, i: usize, parts: &[&str]) -> Vec<String> {
    let log = cluster.log(i);
    log.lines().filter(|l| parts.iter().all(|p| l.contains(p))).map(str::to_string).collect()
}

/// Waits until member 2, whose peer certificate is from another CA, logs that member 0
/// refused its handshake, and member 0 that member 2's certificate is not trusted: each
/// dialer names the flag to check on its side. Returns the two lines' texts.
async fn wait_both_dialers_say_why(cluster: &TestCluster) -> (String, String) {
    let (m1, m3) = (cluster.peer_url(0), cluster.peer_url(2));
    let refused = format!(
        "peer {m1} refused our TLS handshake (unknown certificate authority: check that \
         --peer-cert-file is issued by a CA in the cluster's --peer-trusted-ca-file); \
         retrying with backoff"
    );
    wait_log_line(cluster, 2, &[&refused]).await;
    let distrusted = format!(
        "peer {m3} presented a certificate we do not trust (unknown issuer: check that our \
         --peer-trusted-ca-file holds the CA that issued its certificate); retrying with \
         backoff"
    );
    wait_log_line(cluster, 0, &[&distrusted]).await;
    (refused, distrusted)
}

/// Waits (up to 30 s) for a line in member `i`'s log with every one of `parts`.
async fn wait_log_line(cluster: &TestCluster, i: usize, parts: &[&str]) -> String {
    let what = format!("member {i} logs {parts:?}");
    common::wait_for(&what, Duration::from_secs(30), Duration::from_millis(100), || {
        let line = log_lines(cluster, i, parts).into_iter().next();
        async move { line }
    })
    .await
}

/// Operator pass: a member added to a TLS cluster and started with a peer certificate
/// from another CA than the cluster trusts waited 30 s, then said only "transport
/// error". Now it exits within seconds with one line naming the peers and the cause
/// in TLS terms and the flag to check, told apart from the reverse case (it does not
/// trust the cluster's certificates); the members log, once per address and cause in
/// 10 s, whom they rejected and why; the cluster keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_with_another_cas_peer_certificate_exits_at_once_saying_why() {
    let c = certs("badjoin");
    let mut cluster = start("tls-badjoin", &c);
    cluster.wait_ready().await;
    let new = add_member(&mut cluster, "m4").await;
    let peers: Vec<String> = (0..3).map(|i| cluster.peer_url(i)).collect();

    // Our certificate is issued by a CA the cluster does not trust.
    let theirs = (c.stranger_peer.cert_file.as_path(), c.stranger_peer.key_file.as_path());
    cluster.set_flags(new, flags_with_peer(&c, theirs, &c.ca.cert_file));
    let (status, line) = start_and_wait_exit(&mut cluster, new, Duration::from_secs(10)).await;
    assert!(!status.success(), "{status}: {line}");
    assert!(line.starts_with("error: joining: peer"), "{line}");
    assert!(peers.iter().all(|u| line.contains(u.as_str())), "names the peers: {line}");
    assert!(
        line.ends_with(
            " refused our TLS handshake (unknown certificate authority: check that \
             --peer-cert-file is issued by a CA in the cluster's --peer-trusted-ca-file)"
        ),
        "{line}"
    );
    let rejected = "its certificate is refused (unknown issuer: it is not issued by a CA in \
                    --peer-trusted-ca-file)";
    for i in 0..3 {
        let line =
            wait_log_line(&cluster, i, &["rejected connection from 127.0.0.1:", rejected]).await;
        assert!(line.contains("WARN"), "{line}");
        // At least three rounds of two connections each were refused.
        let lines = log_lines(&cluster, i, &[rejected]);
        assert!(lines.len() <= 2, "rate-limited, member {i}: {lines:#?}");
    }

    // The reverse: our certificate is the cluster's, but we trust another CA.
    let ours = (c.peer.cert_file.as_path(), c.peer.key_file.as_path());
    cluster.set_flags(new, flags_with_peer(&c, ours, &c.other_ca_file));
    let (status, line) = start_and_wait_exit(&mut cluster, new, Duration::from_secs(10)).await;
    assert!(!status.success(), "{status}: {line}");
    assert!(line.starts_with("error: joining: peer"), "{line}");
    assert!(
        line.ends_with(
            " presented a certificate we do not trust (unknown issuer: check that our \
             --peer-trusted-ca-file holds the CA that issued its certificate)"
        ),
        "{line}"
    );
    let refused = "it refused our certificate (unknown certificate authority: check that \
                   --peer-cert-file is issued by a CA in its --peer-trusted-ca-file)";
    wait_log_line(&cluster, 0, &["rejected connection from 127.0.0.1:", refused]).await;

    // The cluster serves on.
    let mut client = cluster.client();
    client.put(b"after-bad-join", b"yes").await.expect("put");
    let got = client.get(b"after-bad-join", false).await.expect("get").expect("the key");
    assert_eq!(&got.value[..], b"yes");
}

/// Operator pass: what a running member logs when its peer certificate files are
/// replaced by another CA's (a botched rotation), and what its peers log. The files
/// are re-read within a second; established connections keep the certificates they
/// negotiated (as with etcd), so m1 restarts to make both sides dial anew: m1 then
/// refuses m3 and m3 refuses m1. Each side says so in TLS terms, rate-limited (the dialler once per peer and cause
/// in 30 s, the listener once per address and cause in 10 s with the count it did not
/// log), while the other two members keep serving; with the right files back, it
/// catches up.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_peer_certificate_is_replaced_by_another_cas_says_why_rate_limited() {
    let c = certs("replaced");
    let mut cluster = TestCluster::plan(ClusterSpec::raftkv("tls-replaced", &[]).https());
    let own = (c.dir.join("m3-peer.pem"), c.dir.join("m3-peer.key"));
    let copy = |from: &Issued| {
        std::fs::copy(&from.key_file, &own.1).unwrap();
        std::fs::copy(&from.cert_file, &own.0).unwrap();
    };
    copy(&c.peer);
    for i in 0..3 {
        let flags = if i == 2 {
            flags_with_peer(&c, (&own.0, &own.1), &c.ca.cert_file)
        } else {
            server_flags(&c)
        };
        cluster.set_flags(i, flags);
    }
    cluster.set_client_tls(client_tls(&c.ca.cert_file, Some(&c.client)));
    cluster.spawn_all();
    cluster.wait_ready().await;

    cluster.kill(0);
    copy(&c.stranger_peer);
    // m1 comes back once m3 said it reloaded the new files, both for its peer listener
    // and for its dialer (else m3's first dial to the new m1 could take the old ones and
    // be welcome). Each looks at the files at a handshake, at most once per
    // RELOAD_CHECK_INTERVAL: the dialer as m3 redials m1, the listener at a handshake
    // from here. A half-copied pair does not load: one line each, once both are new.
    let reloaded = ["TLS files changed: reloaded", "m3-peer.pem"];
    let peer_tls = client_tls(&c.ca.cert_file, Some(&c.peer));
    let m3_peer = cluster.peer_url(2);
    let wait = Duration::from_secs(30);
    let (m3_log, reloaded) = (&cluster, &reloaded);
    common::wait_for("m3 reloads its peer files", wait, Duration::from_millis(100), || {
        let poke = handshake(&peer_tls, &m3_peer);
        async move {
            let _ = poke.await;
            (log_lines(m3_log, 2, reloaded).len() >= 2).then_some(())
        }
    })
    .await;
    cluster.spawn(0);
    let (refused, distrusted) = wait_both_dialers_say_why(&cluster).await;
    let rejected = "its certificate is refused (unknown issuer: it is not issued by a CA in \
                    --peer-trusted-ca-file)";
    // The listener's second warning comes 10 s after its first, with what it did not log.
    let again = wait_log_line(&cluster, 0, &[rejected, "more rejections from this address"]).await;
    assert!(again.contains("rejected connection from 127.0.0.1:"), "{again}");
    assert!(log_lines(&cluster, 0, &[rejected]).len() <= 3, "rate-limited: {again}");
    assert!(log_lines(&cluster, 2, &[&refused]).len() <= 2, "once per 30 s");
    assert!(log_lines(&cluster, 0, &[&distrusted]).len() <= 2, "once per 30 s");

    let mut client = cluster.client();
    client.put(b"while-refused", b"yes").await.expect("m1 and m2 serve");

    copy(&c.peer);
    let mut kv = pb::kv_client::KvClient::new(cluster.channel(2));
    let read = pb::RangeRequest { key: "while-refused".into(), ..Default::default() };
    common::wait_for("m3 back", Duration::from_secs(30), Duration::from_millis(100), || {
        let (mut kv, read) = (kv.clone(), read.clone());
        async move { kv.range(read).await.ok().filter(|r| r.get_ref().count == 1) }
    })
    .await;
    kv.range(read).await.expect("m3 serves again");
}

/// Runs `raftkv get k` on `endpoint` with the TLS flags `flags`; whether it succeeded,
/// its stderr and how long it took.
fn cli_get(endpoint: &str, flags: &[String]) -> (bool, String, Duration) {
    let started = std::time::Instant::now();
    // A deadline far above the bound checked: failing at once is the diagnosis's doing.
    let mut args = vec!["get", "--endpoints", endpoint, "--timeout-secs", "20"];
    args.extend(flags.iter().map(String::as_str));
    args.push("k");
    let (ok, out, err) = raftkv(&args);
    (ok, format!("{out}{err}"), started.elapsed())
}

/// Operator pass: the CLI given a wrong `--cacert`, no `--cert`, another CA's `--cert`,
/// `http://` for a TLS port or `https://` for a plain one retried for 10 s and said
/// "no member answered in time; last error: ... transport error" (etcdctl 3.4 says
/// "context deadline exceeded" after its timeout for all of these). Now it exits
/// non-zero at once with one line naming the endpoint, the cause in TLS terms and the
/// flag to check.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_names_the_tls_flag_to_check_and_exits_at_once() {
    let c = certs("cli");
    let flags = server_flags(&c);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut spec = ClusterSpec::raftkv("tls-cli", &flags).https().members(1);
    spec = spec.named("t");
    let mut cluster = TestCluster::start_spec(spec);
    cluster.set_client_tls(client_tls(&c.ca.cert_file, Some(&c.client)));
    cluster.wait_ready().await;
    let plain = TestCluster::start_spec(ClusterSpec::raftkv("tls-cli-plain", &[]).members(1));
    plain.wait_ready().await;
    let (https, http) = (cluster.endpoint(0), plain.endpoint(0));
    let tls_flags = |ca: &Path, cert: Option<&Issued>| {
        let mut flags = vec![format!("--cacert={}", p(ca))];
        if let Some(cert) = cert {
            flags.push(format!("--cert={}", p(&cert.cert_file)));
            flags.push(format!("--key={}", p(&cert.key_file)));
        }
        flags
    };
    let good = tls_flags(&c.ca.cert_file, Some(&c.client));
    let (ok, out, _) = cli_get(&https, &good);
    assert!(ok, "the right flags work: {out}");

    let cases = [
        (
            &https,
            tls_flags(&c.other_ca_file, Some(&c.client)),
            format!(
                "error: {https} presented a certificate we do not trust (unknown issuer: check \
                 that our --cacert holds the CA that issued its certificate)"
            ),
        ),
        (
            &https,
            tls_flags(&c.ca.cert_file, None),
            format!(
                "error: {https} refused our TLS handshake (certificate required: it requires a \
                 client certificate: give --cert and --key)"
            ),
        ),
        (
            &https,
            tls_flags(&c.ca.cert_file, Some(&c.stranger)),
            format!(
                "error: {https} refused our TLS handshake (unknown certificate authority: check \
                 that --cert is issued by a CA in the server's --trusted-ca-file)"
            ),
        ),
        (
            &https.replace("https://", "http://"),
            good.clone(),
            format!(
                "error: {} serves TLS, not plain HTTP/2: use {https} in --endpoints, with \
                 --cacert (the CA that signs the members' certificates)",
                https.replace("https://", "http://")
            ),
        ),
        (
            &http.replace("http://", "https://"),
            good.clone(),
            format!(
                "error: {} serves plain HTTP/2, not TLS: use {http} in --endpoints",
                http.replace("http://", "https://")
            ),
        ),
    ];
    for (endpoint, flags, says) in cases {
        let (ok, out, took) = cli_get(endpoint, &flags);
        assert!(!ok, "{flags:?}: {out}");
        assert_eq!(out.trim_end(), says, "{flags:?}");
        assert!(took < Duration::from_secs(5), "at once, not at the deadline: {took:?}");
    }
    // One endpoint refused, another fine: the command is served.
    let both = format!("{https},{http}");
    let (ok, out, _) = cli_get(&both, &tls_flags(&c.other_ca_file, None));
    assert!(ok, "{out}");
}

/// Operator pass: a NEW cluster (`--initial-cluster-state new`) where m3's peer
/// certificate is from another CA. Both sides say why in the joining path's words: m3's
/// dialler that m1 refused its handshake (naming --peer-cert-file and the cluster's
/// --peer-trusted-ca-file), m1's dialler that m3's certificate is not trusted (naming
/// --peer-trusted-ca-file), m1's listener whom it rejected; m1 and m2 serve meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_cluster_with_a_peer_certificate_of_another_ca_says_why_on_both_sides() {
    let c = certs("newbad");
    let mut cluster = TestCluster::plan(ClusterSpec::raftkv("tls-newbad", &[]).https());
    let stranger = (c.stranger_peer.cert_file.as_path(), c.stranger_peer.key_file.as_path());
    for i in 0..3 {
        let flags =
            if i == 2 { flags_with_peer(&c, stranger, &c.ca.cert_file) } else { server_flags(&c) };
        cluster.set_flags(i, flags);
    }
    cluster.set_client_tls(client_tls(&c.ca.cert_file, Some(&c.client)));
    cluster.spawn_all();
    wait_both_dialers_say_why(&cluster).await;
    let rejected = "its certificate is refused (unknown issuer: it is not issued by a CA in \
                    --peer-trusted-ca-file)";
    wait_log_line(&cluster, 0, &["rejected connection from 127.0.0.1:", rejected]).await;
    let opts = client::ClientOptions { deadline: Duration::from_secs(20), ..Default::default() };
    let tls = client_tls(&c.ca.cert_file, Some(&c.client));
    let endpoints = cluster.endpoints();
    let mut two = client::Client::connect_tls(&endpoints[..2], opts, Some(&tls)).unwrap();
    two.put(b"two-of-three", b"yes").await.expect("m1 and m2 serve");
}
