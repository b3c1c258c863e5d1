//! # tls: TLS for raftkv's client and peer ports, as etcd does it
//!
//! raftkv speaks TLS with rustls (its `ring` provider; no OpenSSL). Both ends of every
//! TLS connection are built here: [`ServerTls`] for the listeners (client port and peer
//! port) and [`ClientTls`] for whoever dials them (a member dialling its peers, our
//! client and CLI). The settings are etcd's flags: a certificate and key, a trusted CA,
//! whether a client certificate is required (`--client-cert-auth`,
//! `--peer-client-cert-auth`) and the one common name peers may have
//! (`--peer-cert-allowed-cn`).
//!
//! **Rotation without restart.** etcd re-reads its certificate files on every handshake.
//! Here each handshake takes the rustls configuration from a [`Reloading`] holder that
//! looks at the files' modification times and sizes at most once per
//! [`RELOAD_CHECK_INTERVAL`] and rebuilds the whole configuration when one changed; a
//! new configuration that does not load (a key not yet matching the new certificate
//! while an operator copies files) is logged and the previous one stays in use until
//! the files change again; a reload logs one info line, "TLS files changed: reloaded". Established connections keep the certificate they
//! negotiated, as with etcd.
//!
//! **Why not tonic's own TLS.** tonic's server TLS takes one fixed configuration at
//! start-up, and it would sit between our accept stream and the HTTP/2 server, where
//! the client port's `:authority` fix (server's `authority.rs`) must see plaintext. So
//! the listener's accept stream terminates TLS itself ([`ServerTls::accept_stream`]):
//! handshakes run concurrently (a bounded number, each with a deadline), so a client
//! that opens a TCP connection and sends nothing holds up no one.
//!
//! **Refused at the handshake.** Without an acceptable certificate (none, another CA's,
//! or under `--peer-cert-allowed-cn` another common name) the TLS handshake fails, so a
//! refused client never reaches gRPC, as with etcd. Both sides say why in TLS terms,
//! told apart by rustls's typed errors (`diagnose`): the listener logs "rejected
//! connection from ADDRESS" with the cause, one line per connection (a refused common
//! name included, which the verifier hands over rather than logs: `cn`), at most once
//! per address per [`REJECTION_LOG_INTERVAL`], and a dialer's [`ClientTls::explain`] and
//! [`ClientTls::probe`] say whether the other side refused our certificate or we
//! refused theirs, naming the flag to check.

mod cn;
mod diagnose;
#[cfg(feature = "generate")]
pub mod generate;
mod reload;
mod speaks;

pub use cn::common_name;
pub use diagnose::{
    failure, join_by_cause, Failure, RejectionLog, REJECTION_LOG_ADDRESSES_MAX,
    REJECTION_LOG_INTERVAL,
};
pub use reload::{Reloading, RELOAD_CHECK_INTERVAL};
pub use speaks::{speaks_otherwise, Speaks};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// Longest a TLS handshake on a listener may take before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes one listener runs at once; further connections wait in the kernel's
/// accept queue until one finishes.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Finished handshakes waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;

/// A TLS setting that cannot be used: what, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TlsError {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |e: &dyn fmt::Display| TlsError(format!("{flag} {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate (-----BEGIN CERTIFICATE-----) in the file"));
    }
    Ok(certs)
}

fn load_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsError(format!(
            "{flag} {}: {e} (expected a PEM private key: PKCS#8, PKCS#1 RSA or SEC1 EC)",
            path.display()
        ))
    })
}

fn load_roots(flag: &str, path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(flag, path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("{flag} {}: not a usable CA: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// The TLS side of one listener: etcd's `--cert-file --key-file --trusted-ca-file
/// --client-cert-auth` (client port) or their `--peer-` twins and
/// `--peer-cert-allowed-cn` (peer port).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerFiles {
    /// The listener's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CA certificates that sign acceptable client certificates (PEM).
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `trusted_ca_file`.
    pub client_cert_auth: bool,
    /// Accept only client certificates with this subject common name.
    pub allowed_cn: Option<String>,
    /// Flag prefix for messages: `--` or `--peer-`.
    pub flag_prefix: String,
    /// Offer ALPN `http/1.1` after `h2`: the client port, which serves `/health`,
    /// `/metrics` and `/version` over HTTP/1.1 too (as etcd's does over TLS); a client
    /// that offers both still gets `h2`. Off for the peer port, which speaks HTTP/2 only.
    pub http1: bool,
}

impl ServerFiles {
    fn flag(&self, name: &str) -> String {
        format!("{}{name}", self.flag_prefix)
    }

    /// Builds the rustls configuration from the files as they are now.
    pub fn build(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = load_certs(&self.flag("cert-file"), &self.cert_file)?;
        let key = load_key(&self.flag("key-file"), &self.key_file)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
        let builder =
            match (&self.trusted_ca_file, self.client_cert_auth) {
                (Some(ca), true) => {
                    let roots = load_roots(&self.flag("trusted-ca-file"), ca)?;
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        roots,
                        provider(),
                    )
                    .build()
                    .map_err(|e| {
                        TlsError(format!("{} {}: {e}", self.flag("trusted-ca-file"), ca.display()))
                    })?;
                    let verifier = match &self.allowed_cn {
                        Some(cn) => cn::AllowedCn::wrap(verifier, cn.clone()),
                        None => verifier,
                    };
                    builder.with_client_cert_verifier(verifier)
                }
                (None, true) => {
                    return Err(TlsError(format!(
                        "{} needs {} (the CA that signs the client certificates to accept)",
                        self.flag("client-cert-auth"),
                        self.flag("trusted-ca-file")
                    )))
                }
                (_, false) => builder.with_no_client_auth(),
            };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            TlsError(format!(
                "{} {} with {} {}: {e}",
                self.flag("cert-file"),
                self.cert_file.display(),
                self.flag("key-file"),
                self.key_file.display()
            ))
        })?;
        // gRPC is HTTP/2 only; grpc-go clients (etcdctl) insist on ALPN "h2". rustls picks
        // the first of these the client offers, so "h2" wins whenever it is offered.
        config.alpn_protocols = vec![b"h2".to_vec()];
        if self.http1 {
            config.alpn_protocols.push(b"http/1.1".to_vec());
        }
        Ok(Arc::new(config))
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert_file.clone(), self.key_file.clone()];
        files.extend(self.trusted_ca_file.clone());
        files
    }
}

/// A listener's TLS: its files, re-read when they change.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<rustls::ServerConfig>>,
    /// `--` or `--peer-`: the flags rejection warnings name.
    flag_prefix: Arc<str>,
    rejections: Arc<RejectionLog>,
}

/// A connection that knows the address it came from, for the rejection warnings.
pub trait RemoteAddr {
    /// The remote end's address, if the socket still knows it.
    fn remote_addr(&self) -> Option<std::net::SocketAddr>;
}

impl RemoteAddr for tokio::net::TcpStream {
    fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer_addr().ok()
    }
}

impl ServerTls {
    /// Loads the files once (an error here names the flag and file) and keeps
    /// watching them.
    pub fn new(files: ServerFiles) -> Result<ServerTls, TlsError> {
        let paths = files.files();
        let flag_prefix = Arc::from(files.flag_prefix.as_str());
        let config = Reloading::new(paths, move || files.build())?;
        Ok(ServerTls { config: Arc::new(config), flag_prefix, rejections: Arc::default() })
    }

    /// The configuration a handshake starting now uses.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config.current()
    }

    /// One warning per remote address and cause per [`REJECTION_LOG_INTERVAL`] (etcd: "rejected
    /// connection from ... (error ...)" for every attempt).
    fn log_rejection(&self, listener: &str, remote: Option<std::net::SocketAddr>, why: &str) {
        let Some(quiet) = self.rejections.admit(remote, why, std::time::Instant::now()) else {
            return;
        };
        let from = remote.map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        if quiet == 0 {
            tracing::warn!(listener, "rejected connection from {from}: {why}");
        } else {
            tracing::warn!(
                listener,
                not_logged = quiet,
                "rejected connection from {from}: {why} ({quiet} more rejections from this \
                 address since the last warning)"
            );
        }
    }

    /// Runs the TLS handshake of every connection `incoming` yields, concurrently (at
    /// most [`HANDSHAKES_IN_FLIGHT_MAX`], each within [`HANDSHAKE_TIMEOUT`]), and yields
    /// the connections whose handshake succeeded. Failed handshakes are dropped and
    /// logged with the listener's flag name, the remote address and the cause in TLS
    /// terms, at most once per address per [`REJECTION_LOG_INTERVAL`]. Must be called
    /// inside a tokio runtime.
    pub fn accept_stream<S, IO>(
        &self,
        incoming: S,
        listener: &'static str,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerTlsStream<IO>>>
    where
        S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + Unpin + 'static,
        IO: AsyncRead + AsyncWrite + RemoteAddr + Unpin + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
        tokio::spawn(handshakes(self.clone(), incoming, listener, tx));
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

async fn handshakes<S, IO>(
    tls: ServerTls,
    mut incoming: S,
    listener: &'static str,
    accepted: tokio::sync::mpsc::Sender<std::io::Result<ServerTlsStream<IO>>>,
) where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Unpin,
    IO: AsyncRead + AsyncWrite + RemoteAddr + Unpin + Send + 'static,
{
    use tokio_stream::StreamExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    while let Some(next) = incoming.next().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let connection = match next {
            Ok(c) => c,
            Err(e) => {
                if accepted.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (accepted, tls) = (accepted.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let remote = connection.remote_addr();
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(connection));
            let why = match cn::with_refused_cn(handshake).await {
                (Ok(Ok(stream)), _) => {
                    let _ = accepted.send(Ok(stream)).await;
                    return;
                }
                (Ok(Err(error)), refused) => {
                    diagnose::explain_rejection(&tls.flag_prefix, &error, refused.as_ref())
                }
                (Err(_), _) => format!("TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}"),
            };
            tls.log_rejection(listener, remote, &why);
        });
    }
}

/// The TLS side of a dialer: etcdctl's `--cacert --cert --key`, or a member's
/// `--peer-trusted-ca-file --peer-cert-file --peer-key-file` when it dials a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA certificates that sign acceptable server certificates (PEM).
    pub ca_file: PathBuf,
    /// This side's certificate and key, for servers that ask for one.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Flag names for messages: CA, certificate, key.
    pub flags: [&'static str; 3],
}

impl ClientFiles {
    /// Builds the rustls configuration from the files as they are now.
    pub fn build(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = load_roots(self.flags[0], &self.ca_file)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let mut config = match &self.cert_and_key {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = load_certs(self.flags[1], cert)?;
                let key_der = load_key(self.flags[2], key)?;
                builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                    TlsError(format!(
                        "{} {} with {} {}: {e}",
                        self.flags[1],
                        cert.display(),
                        self.flags[2],
                        key.display()
                    ))
                })?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.ca_file.clone()];
        if let Some((cert, key)) = &self.cert_and_key {
            files.extend([cert.clone(), key.clone()]);
        }
        files
    }
}

/// A dialer's TLS: its files, re-read when they change.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<rustls::ClientConfig>>,
    /// CA, certificate and key flag names, for [`ClientTls::explain`].
    flags: [&'static str; 3],
}

impl ClientTls {
    /// Loads the files once (an error names the flag and file) and keeps watching them.
    pub fn new(files: ClientFiles) -> Result<ClientTls, TlsError> {
        let paths = files.files();
        let flags = files.flags;
        let config = Reloading::new(paths, move || files.build())?;
        Ok(ClientTls { config: Arc::new(config), flags })
    }

    /// Connects to `uri`'s host and port over TCP (Nagle off) and runs the TLS
    /// handshake, checking the server's certificate against the CA and the URI's host.
    /// The files are looked at when the dial starts, so a dialer that keeps redialling
    /// a peer that is down notices (and logs) changed files too.
    pub async fn connect(
        &self,
        uri: &http::Uri,
    ) -> std::io::Result<ClientTlsStream<tokio::net::TcpStream>> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        let host = uri.host().ok_or_else(|| invalid(format!("{uri}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| invalid(format!("{uri}: {host:?} is not a host name or IP: {e}")))?;
        let config = self.config.current();
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
    }

    /// Why a connection with this TLS failed, if `error` (or one of its sources) is a
    /// TLS failure: whether the other side refused our certificate or we refused its
    /// own, in TLS terms, with the flag to check. Reads after "peer URL " or "member
    /// URL ": "refused our TLS handshake (bad certificate: check that --peer-cert-file
    /// is issued by a CA in the cluster's --peer-trusted-ca-file)". `None` for other
    /// failures (connection refused, timeouts).
    pub fn explain(&self, error: &(dyn std::error::Error + 'static)) -> Option<String> {
        let [ca, cert, key] = self.flags;
        Some(diagnose::DialerFlags { ca, cert, key }.explain(&failure(error)?))
    }

    /// Connects to `uri` on a connection of its own and says why TLS fails there, as
    /// [`ClientTls::explain`] does; `None` if the handshake succeeds, if the failure is
    /// not TLS's (connection refused...) or if it takes longer than `timeout`.
    ///
    /// For callers whose own connection went through gRPC, which loses the type of the
    /// error (h2 keeps an I/O error's kind and text only). Sends the HTTP/2 preface and
    /// an empty SETTINGS frame, so that an HTTP/2 server answers at once: in TLS 1.3 the
    /// server's verdict on our certificate comes at our first read.
    pub async fn probe(&self, uri: &http::Uri, timeout: Duration) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut conn = self.connect(uri).await?;
            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
            let wrote = match conn.write_all(preface).await {
                Ok(()) => conn.flush().await,
                Err(e) => Err(e),
            };
            // Read even if the write failed: a server that refused our certificate and
            // closed may have reset the connection, and its alert still waits to be read.
            let mut first = [0u8; 1];
            let _bytes = conn.read(&mut first).await?;
            wrote
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Err(e)) => self.explain(&e),
            Ok(Ok(())) | Err(_) => None,
        }
    }

    /// A connector for `tonic`'s `Endpoint::connect_with_connector` that dials with
    /// [`ClientTls::connect`].
    pub fn connector(
        &self,
    ) -> impl tower::Service<
        http::Uri,
        Response = hyper_util::rt::TokioIo<ClientTlsStream<tokio::net::TcpStream>>,
        Error = std::io::Error,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let tls = self.clone();
        tower::service_fn(move |uri: http::Uri| {
            let tls = tls.clone();
            async move { tls.connect(&uri).await.map(hyper_util::rt::TokioIo::new) }
        })
    }
}

/// Whether a URL asks for TLS (`https://`).
pub fn is_https(url: &str) -> bool {
    url.trim().to_ascii_lowercase().starts_with("https://")
}

#[cfg(test)]
mod tests;
