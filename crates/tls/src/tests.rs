//! Handshakes between [`ServerTls`] and [`ClientTls`] over loopback TCP, with
//! certificates made by [`crate::generate`].

use super::*;
use crate::generate::{Issued, TestCa};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("raftkv-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server_files(ca: &TestCa, server: &Issued, auth: bool, cn: Option<&str>) -> ServerFiles {
    ServerFiles {
        cert_file: server.cert_file.clone(),
        key_file: server.key_file.clone(),
        trusted_ca_file: Some(ca.cert_file.clone()),
        client_cert_auth: auth,
        allowed_cn: cn.map(str::to_string),
        flag_prefix: "--peer-".into(),
        http1: false,
    }
}

fn client(ca: &Path, cert: Option<&Issued>) -> ClientTls {
    ClientTls::new(ClientFiles {
        ca_file: ca.to_path_buf(),
        cert_and_key: cert.map(|c| (c.cert_file.clone(), c.key_file.clone())),
        flags: ["--cacert", "--cert", "--key"],
    })
    .unwrap()
}

/// An echo server behind `tls` on a loopback port; returns its URI.
async fn echo_server(tls: ServerTls) -> http::Uri {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri: http::Uri =
        format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port()).parse().unwrap();
    let tcp = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut accepted = tls.accept_stream(tcp, "--test");
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = accepted.next().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if conn.read_exact(&mut b).await.is_ok() {
                    let _ = conn.write_all(&b).await;
                }
            });
        }
    });
    uri
}

/// Connects, echoes one byte, and returns the server certificate's CN.
async fn round_trip(client: &ClientTls, uri: &http::Uri) -> std::io::Result<String> {
    let mut conn = client.connect(uri).await?;
    conn.write_all(b"x").await?;
    let mut b = [0u8; 1];
    // TLS 1.3: a refused client certificate shows up at the first read.
    conn.read_exact(&mut b).await?;
    let (_, session) = conn.get_ref();
    let cert = &session.peer_certificates().expect("server certificate")[0];
    Ok(common_name(cert).expect("a CN"))
}

#[tokio::test]
async fn mutual_tls_accepts_a_client_signed_by_the_trusted_ca() {
    let dir = Dir::new("mutual");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let server = ca.issue(&dir.0, "server", "member-1", &["127.0.0.1", "localhost"]).unwrap();
    let user = ca.issue(&dir.0, "client", "alice", &[]).unwrap();
    let uri = echo_server(ServerTls::new(server_files(&ca, &server, true, None)).unwrap()).await;
    assert_eq!(round_trip(&client(&ca.cert_file, Some(&user)), &uri).await.unwrap(), "member-1");
}

#[tokio::test]
async fn client_cert_auth_refuses_no_certificate_and_another_cas_certificate() {
    let dir = Dir::new("refuse");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let other = TestCa::create(&dir.0, "other-ca").unwrap();
    let server = ca.issue(&dir.0, "server", "member-1", &["127.0.0.1"]).unwrap();
    let stranger = other.issue(&dir.0, "stranger", "alice", &[]).unwrap();
    let uri = echo_server(ServerTls::new(server_files(&ca, &server, true, None)).unwrap()).await;
    assert!(round_trip(&client(&ca.cert_file, None), &uri).await.is_err(), "no certificate");
    assert!(round_trip(&client(&ca.cert_file, Some(&stranger)), &uri).await.is_err(), "other CA");
    // Without --client-cert-auth the same clients are let in.
    let open = echo_server(ServerTls::new(server_files(&ca, &server, false, None)).unwrap()).await;
    assert!(round_trip(&client(&ca.cert_file, None), &open).await.is_ok());
}

#[tokio::test]
async fn a_client_refuses_a_server_its_ca_did_not_sign() {
    let dir = Dir::new("server-ca");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let other = TestCa::create(&dir.0, "other-ca").unwrap();
    let server = other.issue(&dir.0, "server", "impostor", &["127.0.0.1"]).unwrap();
    let uri =
        echo_server(ServerTls::new(server_files(&other, &server, false, None)).unwrap()).await;
    let e = round_trip(&client(&ca.cert_file, None), &uri).await.unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn peer_cert_allowed_cn_refuses_other_common_names() {
    let dir = Dir::new("cn");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let server = ca.issue(&dir.0, "server", "etcd-peer", &["127.0.0.1"]).unwrap();
    let good = ca.issue(&dir.0, "good", "etcd-peer", &[]).unwrap();
    let bad = ca.issue(&dir.0, "bad", "intruder", &[]).unwrap();
    let files = server_files(&ca, &server, true, Some("etcd-peer"));
    let uri = echo_server(ServerTls::new(files).unwrap()).await;
    assert!(round_trip(&client(&ca.cert_file, Some(&good)), &uri).await.is_ok());
    assert!(round_trip(&client(&ca.cert_file, Some(&bad)), &uri).await.is_err());
}

#[tokio::test]
async fn replaced_certificate_files_are_used_by_new_handshakes_without_restart() {
    let dir = Dir::new("rotate");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let server = ca.issue(&dir.0, "server", "before", &["127.0.0.1"]).unwrap();
    let uri = echo_server(ServerTls::new(server_files(&ca, &server, false, None)).unwrap()).await;
    let c = client(&ca.cert_file, None);
    assert_eq!(round_trip(&c, &uri).await.unwrap(), "before");
    let rotated = ca.issue(&dir.0, "server", "after", &["127.0.0.1"]).unwrap();
    assert_eq!(rotated, server, "same file names: replaced in place");
    let deadline = Instant::now() + RELOAD_CHECK_INTERVAL * 5;
    loop {
        let cn = round_trip(&c, &uri).await.unwrap();
        if cn == "after" {
            break;
        }
        assert!(Instant::now() < deadline, "still serving the old certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ALPN protocol a handshake with `server` settles on when the client offers
/// `offered`, or the handshake's error.
async fn negotiated(server: ServerFiles, ca: &Path, offered: &[&str]) -> Result<String, String> {
    let uri = echo_server(ServerTls::new(server).unwrap()).await;
    let files = ClientFiles { ca_file: ca.to_path_buf(), cert_and_key: None, flags: ["", "", ""] };
    let mut config = (*files.build().unwrap()).clone();
    config.alpn_protocols = offered.iter().map(|p| p.as_bytes().to_vec()).collect();
    let port = uri.port_u16().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let attempt = async {
        let mut conn =
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
        conn.write_all(b"x").await?;
        conn.read_exact(&mut [0u8; 1]).await?;
        Ok::<_, std::io::Error>(conn.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    };
    match attempt.await {
        Ok(p) => Ok(String::from_utf8_lossy(&p.unwrap_or_default()).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn the_client_port_offers_http1_after_h2_and_the_peer_port_h2_only() {
    let dir = Dir::new("alpn");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let server = ca.issue(&dir.0, "server", "member-1", &["127.0.0.1"]).unwrap();
    let client_port = ServerFiles { http1: true, ..server_files(&ca, &server, false, None) };
    let peer_port = server_files(&ca, &server, false, None);
    let ca = &ca.cert_file;
    // curl --http1.1, a Prometheus scrape without HTTP/2.
    assert_eq!(negotiated(client_port.clone(), ca, &["http/1.1"]).await.as_deref(), Ok("http/1.1"));
    // curl's default and grpc-go: h2 wins whichever order the client lists them in.
    let both = negotiated(client_port.clone(), ca, &["http/1.1", "h2"]).await;
    assert_eq!(both.as_deref(), Ok("h2"));
    assert_eq!(negotiated(client_port, ca, &["h2"]).await.as_deref(), Ok("h2"));
    assert_eq!(negotiated(peer_port.clone(), ca, &["h2", "http/1.1"]).await.as_deref(), Ok("h2"));
    let e = negotiated(peer_port, ca, &["http/1.1"]).await.unwrap_err();
    assert!(e.contains("NoApplicationProtocol"), "{e}");
}

#[test]
fn a_key_that_does_not_load_keeps_the_previous_configuration() {
    let dir = Dir::new("broken");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let server = ca.issue(&dir.0, "server", "one", &["127.0.0.1"]).unwrap();
    let files = server_files(&ca, &server, false, None);
    let build = {
        let files = files.clone();
        move || files.build()
    };
    let r = Reloading::with_interval(files.files(), build, Duration::ZERO).unwrap();
    let first = r.current();
    std::fs::write(&server.key_file, "not a key").unwrap();
    assert!(Arc::ptr_eq(&first, &r.current()), "broken files: the old configuration stays");
    ca.issue(&dir.0, "server", "two", &["127.0.0.1"]).unwrap();
    assert!(!Arc::ptr_eq(&first, &r.current()), "fixed files: reloaded");
}

#[test]
fn bad_files_are_named_with_their_flag() {
    let dir = Dir::new("bad");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let server = ca.issue(&dir.0, "server", "one", &["127.0.0.1"]).unwrap();
    let mut files = server_files(&ca, &server, true, None);
    files.key_file = dir.0.join("missing.key");
    let e = ServerTls::new(files.clone()).err().unwrap();
    assert!(e.0.starts_with("--peer-key-file ") && e.0.contains("missing.key"), "{e}");
    files.key_file = server.key_file.clone();
    files.cert_file = ca.cert_file.clone();
    let e = ServerTls::new(files.clone()).err().unwrap();
    assert!(e.0.contains("--peer-cert-file") && e.0.contains("--peer-key-file"), "{e}");
    files.cert_file = server.cert_file.clone();
    files.trusted_ca_file = None;
    let e = ServerTls::new(files).err().unwrap();
    assert!(e.0.contains("--peer-client-cert-auth needs --peer-trusted-ca-file"), "{e}");
}

#[test]
fn common_name_reads_the_subject_and_survives_garbage() {
    let dir = Dir::new("cn-parse");
    let ca = TestCa::create(&dir.0, "my-ca").unwrap();
    let leaf = ca.issue(&dir.0, "leaf", "node-é1", &["127.0.0.1"]).unwrap();
    let der = |p: &Path| CertificateDer::from_pem_file(p).unwrap();
    assert_eq!(common_name(&der(&leaf.cert_file)).as_deref(), Some("node-é1"));
    assert_eq!(common_name(&der(&ca.cert_file)).as_deref(), Some("my-ca"));
    let cert = der(&leaf.cert_file).to_vec();
    for cut in 0..cert.len() {
        let _ = common_name(&cert[..cut]);
    }
    for flip in [0usize, 1, 2, 4, 8, 20, 100] {
        let mut bytes = cert.clone();
        bytes[flip % cert.len()] ^= 0xff;
        let _ = common_name(&bytes);
    }
    assert_eq!(common_name(&[]), None);
    assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
}

fn peer_client(ca: &Path, cert: &Issued) -> ClientTls {
    ClientTls::new(ClientFiles {
        ca_file: ca.to_path_buf(),
        cert_and_key: Some((cert.cert_file.clone(), cert.key_file.clone())),
        flags: ["--peer-trusted-ca-file", "--peer-cert-file", "--peer-key-file"],
    })
    .unwrap()
}

/// A member joining with a peer certificate from another CA than the cluster's waited
/// 30 s and said "transport error". The two cases are told apart by rustls's types: the
/// server's alert about our certificate (at the first read, TLS 1.3), or our verifier's
/// verdict on theirs (at connect). Each names the flag to check.
#[tokio::test]
async fn a_dialer_says_whether_they_refused_our_certificate_or_we_refused_theirs() {
    let dir = Dir::new("explain");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let other = TestCa::create(&dir.0, "other-ca").unwrap();
    let server = ca.issue(&dir.0, "server", "peer", &["127.0.0.1"]).unwrap();
    let ours = ca.issue(&dir.0, "ours", "peer", &[]).unwrap();
    let stranger = other.issue(&dir.0, "stranger", "peer", &[]).unwrap();
    let uri = echo_server(ServerTls::new(server_files(&ca, &server, true, None)).unwrap()).await;

    let theirs_refused = peer_client(&ca.cert_file, &stranger);
    let e = round_trip(&theirs_refused, &uri).await.unwrap_err();
    assert_eq!(failure(&e), Some(Failure::RefusedOurs(rustls::AlertDescription::UnknownCA)));
    assert_eq!(
        theirs_refused.explain(&e).unwrap(),
        "refused our TLS handshake (unknown certificate authority: check that --peer-cert-file \
         is issued by a CA in the cluster's --peer-trusted-ca-file)"
    );
    let probed = theirs_refused.probe(&uri, Duration::from_secs(5)).await;
    assert_eq!(probed, theirs_refused.explain(&e), "a probe finds the same");

    let we_refuse = peer_client(&other.cert_file, &ours);
    let e = round_trip(&we_refuse, &uri).await.unwrap_err();
    assert_eq!(failure(&e), Some(Failure::RefusedTheirs(rustls::CertificateError::UnknownIssuer)));
    assert_eq!(
        we_refuse.explain(&e).unwrap(),
        "presented a certificate we do not trust (unknown issuer: check that our \
         --peer-trusted-ca-file holds the CA that issued its certificate)"
    );
    assert_eq!(we_refuse.probe(&uri, Duration::from_secs(5)).await, we_refuse.explain(&e));

    let good = peer_client(&ca.cert_file, &ours);
    assert!(round_trip(&good, &uri).await.is_ok());
    assert_eq!(good.probe(&uri, Duration::from_secs(5)).await, None, "nothing to say");
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(good.explain(&refused), None, "not a TLS failure");
}

/// What the listener `tls` says about the connection `client` dials to it, as in
/// `accept_stream` (the handshake inside [`crate::cn::with_refused_cn`]).
async fn rejection(tls: &ServerTls, client: ClientTls) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let uri: http::Uri = format!("https://127.0.0.1:{port}").parse().unwrap();
    let dial = tokio::spawn(async move { round_trip(&client, &uri).await });
    let (tcp, _) = listener.accept().await.unwrap();
    let accept = tokio_rustls::TlsAcceptor::from(tls.current()).accept(tcp);
    let (accept, refused_cn) = crate::cn::with_refused_cn(accept).await;
    let _ = dial.await;
    diagnose::explain_rejection("--peer-", &accept.expect_err("rejected"), refused_cn.as_ref())
}

/// The listener's side of the same handshakes, as its warning says them.
#[tokio::test]
async fn a_listener_says_why_it_rejected_a_connection() {
    let dir = Dir::new("reject");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let other = TestCa::create(&dir.0, "other-ca").unwrap();
    let server = ca.issue(&dir.0, "server", "peer", &["127.0.0.1"]).unwrap();
    let stranger = other.issue(&dir.0, "stranger", "peer", &[]).unwrap();
    let tls = ServerTls::new(server_files(&ca, &server, true, None)).unwrap();
    assert_eq!(
        rejection(&tls, peer_client(&ca.cert_file, &stranger)).await,
        "its certificate is refused (unknown issuer: it is not issued by a CA in \
         --peer-trusted-ca-file)"
    );
    assert_eq!(
        rejection(&tls, client(&ca.cert_file, None)).await,
        "it sent no certificate, which --peer-client-cert-auth requires"
    );
    assert_eq!(
        rejection(&tls, client(&other.cert_file, None)).await,
        "it refused our certificate (unknown certificate authority: check that \
         --peer-cert-file is issued by a CA in its --peer-trusted-ca-file)"
    );
}

/// `--peer-cert-allowed-cn`: the verifier logs nothing itself; the listener's one
/// warning names the common name it refused and the one allowed.
#[tokio::test]
async fn a_listener_names_the_common_name_it_refused() {
    let dir = Dir::new("reject-cn");
    let ca = TestCa::create(&dir.0, "ca").unwrap();
    let server = ca.issue(&dir.0, "server", "etcd-peer", &["127.0.0.1"]).unwrap();
    let intruder = ca.issue(&dir.0, "intruder", "intruder", &[]).unwrap();
    let tls = ServerTls::new(server_files(&ca, &server, true, Some("etcd-peer"))).unwrap();
    assert_eq!(
        rejection(&tls, peer_client(&ca.cert_file, &intruder)).await,
        "its certificate is refused (common name not allowed: its common name \"intruder\" \
         is not the one --peer-cert-allowed-cn allows (\"etcd-peer\"))"
    );
}

/// A peer with a refused certificate redials every 2 s for as long as it runs; etcd
/// logs each attempt. Here: the first at once, then one per address and cause per
/// interval with the count of those not logged; past the bound, new ones share an entry.
#[test]
fn rejections_are_logged_once_per_address_and_cause_per_interval() {
    let log = RejectionLog::default();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let a: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let a_again: std::net::SocketAddr = "10.0.0.1:5001".parse().unwrap();
    let b: std::net::SocketAddr = "10.0.0.2:5000".parse().unwrap();
    assert_eq!(log.admit(Some(a), "x", t0), Some(0), "first: at once");
    assert_eq!(log.admit(Some(a_again), "x", t0 + s(1)), None, "same address and cause");
    assert_eq!(log.admit(Some(a), "y", t0 + s(1)), Some(0), "another cause");
    assert_eq!(log.admit(Some(b), "x", t0 + s(1)), Some(0), "another address");
    assert_eq!(log.admit(Some(a), "x", t0 + s(2)), None);
    assert_eq!(log.admit(Some(a), "x", t0 + REJECTION_LOG_INTERVAL), Some(2), "2 not logged");
    assert_eq!(log.admit(Some(a), "x", t0 + REJECTION_LOG_INTERVAL * 2), Some(0));

    let full = RejectionLog::default();
    let at = |i: usize| -> Option<std::net::SocketAddr> {
        Some(std::net::SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1)))
    };
    for i in 0..REJECTION_LOG_ADDRESSES_MAX {
        assert_eq!(full.admit(at(i), "x", t0), Some(0));
    }
    let past = REJECTION_LOG_ADDRESSES_MAX;
    assert_eq!(full.admit(at(past), "x", t0), Some(0), "the shared entry: logged once");
    assert_eq!(full.admit(at(past + 1), "y", t0), None, "then shared");
    let later = t0 + REJECTION_LOG_INTERVAL;
    assert_eq!(full.admit(at(past + 2), "x", later), Some(0), "stale entries make room");
}

/// Endpoints failing for the same cause share one clause, in the order causes appear.
#[test]
fn failures_are_joined_one_clause_per_cause() {
    let failures = [("a:1", "refused X"), ("b:2", "distrusts Y"), ("c:3", "refused X")];
    assert_eq!(
        crate::join_by_cause(failures, "peer ", "peers "),
        "peers a:1, c:3 each refused X; peer b:2 distrusts Y"
    );
    assert_eq!(crate::join_by_cause([("a:1", "refused X")], "", ""), "a:1 refused X");
}
