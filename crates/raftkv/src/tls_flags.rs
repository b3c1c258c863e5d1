//! etcd's TLS flags of `raftkv server`, checked and turned into the server's TLS
//! settings. As etcd: the URL scheme decides (an `https://` listen URL needs a
//! certificate and key; an `http://` one ignores them with a warning).

use std::path::PathBuf;
use tls::{ClientFiles, ServerFiles};

/// The TLS flags, etcd's names.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Certificate of the client port (PEM), for https:// --listen-client-urls.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Private key of the client port's certificate (PEM).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA that signs the client certificates to accept (PEM).
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Certificate of the peer port (PEM), also presented when dialling peers.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Private key of the peer certificate (PEM).
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CA that signs the peers' certificates (PEM): checks peers in both directions.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a certificate signed by --peer-trusted-ca-file.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Accept only peer certificates with this subject common name.
    #[arg(long)]
    pub peer_cert_allowed_cn: Option<String>,
}

/// The server's TLS settings: client port, peer port, dialling peers.
pub type TlsSettings = (Option<ServerFiles>, Option<ServerFiles>, Option<ClientFiles>);

/// Checks the flags against the URLs and builds the settings. As etcd's, every client
/// URL gets TLS or not by its own scheme: `http://` and `https://` may be mixed.
pub fn settings(
    a: &TlsArgs,
    listen_client_urls: &[&str],
    listen_peer_url: &str,
    peer_urls: &[&str],
) -> Result<TlsSettings, String> {
    let client = listener(
        "client",
        "--",
        listen_client_urls,
        (&a.cert_file, &a.key_file, &a.trusted_ca_file),
        a.client_cert_auth,
        None,
    )?;
    let peer = listener(
        "peer",
        "--peer-",
        &[listen_peer_url],
        (&a.peer_cert_file, &a.peer_key_file, &a.peer_trusted_ca_file),
        a.peer_client_cert_auth,
        a.peer_cert_allowed_cn.clone(),
    )?;
    let dial = match peer_urls.iter().find(|u| tls::is_https(u)) {
        None => None,
        Some(url) => {
            let Some(ca) = &a.peer_trusted_ca_file else {
                return Err(format!(
                    "--initial-cluster: peer {url} is https:// but --peer-trusted-ca-file is not \
                     set; give the CA that signs the peers' certificates"
                ));
            };
            let cert_and_key = a.peer_cert_file.clone().zip(a.peer_key_file.clone());
            let flags = ["--peer-trusted-ca-file", "--peer-cert-file", "--peer-key-file"];
            Some(ClientFiles { ca_file: ca.clone(), cert_and_key, flags })
        }
    };
    Ok((client, peer, dial))
}

type Files<'a> = (&'a Option<PathBuf>, &'a Option<PathBuf>, &'a Option<PathBuf>);

/// The TLS of the `https://` ones of `urls` (one listener kind); `None` if all are
/// `http://`. Each `http://` URL is warned about when the flags ask for TLS (a
/// certificate, client certificate auth), as etcd does: they are ignored for it.
fn listener(
    kind: &str,
    prefix: &str,
    urls: &[&str],
    (cert, key, ca): Files<'_>,
    client_cert_auth: bool,
    allowed_cn: Option<String>,
) -> Result<Option<ServerFiles>, String> {
    for url in urls.iter().filter(|u| !tls::is_https(u)) {
        if cert.is_some() || key.is_some() {
            tracing::warn!(
                url,
                "scheme is HTTP while key and cert files are present; ignoring key and cert files"
            );
        }
        if client_cert_auth {
            let flag = format!("{prefix}client-cert-auth");
            tracing::warn!(
                url,
                flag = %flag,
                "scheme is HTTP while client cert auth is enabled; ignoring client cert auth for \
                 this URL"
            );
        }
    }
    let Some(url) = urls.iter().find(|u| tls::is_https(u)) else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(format!(
            "TLS key/cert ({prefix}cert-file, {prefix}key-file) must be provided for {kind} url \
             {url} with HTTPS scheme"
        ));
    };
    Ok(Some(ServerFiles {
        cert_file: cert.clone(),
        key_file: key.clone(),
        trusted_ca_file: ca.clone(),
        client_cert_auth,
        allowed_cn,
        flag_prefix: prefix.to_string(),
        // The client port serves HTTP/1.1 too (`/health`, `/metrics`, `/version`); the
        // peer port only HTTP/2.
        http1: kind == "client",
    }))
}

/// etcdctl's TLS flags for `raftkv put/get/...` and `bench`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientTlsArgs {
    /// CA that signs the members' certificates, for https:// endpoints (PEM).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate, for members started with --client-cert-auth (PEM).
    #[arg(long = "cert", id = "tls_cert")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    // Ids apart from the flag names: `put`, `get`... have a KEY argument.
    // No clap `requires` between --cert and --key: `client_tls` checks the pair, so the
    // mistake exits as a bad argument (128), as etcdctl's, not as a usage error (1).
    #[arg(long = "key", id = "tls_key")]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS to reach https:// endpoints with (`None`: no --cacert given).
    pub fn client_tls(&self) -> Result<Option<tls::ClientTls>, String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err("--cert and --key go together: give both (the client certificate \
                        and its private key) or neither"
                .into());
        }
        let Some(ca) = &self.cacert else {
            if self.cert.is_some() {
                return Err(
                    "--cert needs --cacert (the CA that signs the members' certificates)".into()
                );
            }
            return Ok(None);
        };
        let files = ClientFiles {
            ca_file: ca.clone(),
            cert_and_key: self.cert.clone().zip(self.key.clone()),
            flags: ["--cacert", "--cert", "--key"],
        };
        tls::ClientTls::new(files).map(Some).map_err(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_certificate() -> TlsArgs {
        TlsArgs {
            cert_file: Some("server.crt".into()),
            key_file: Some("server.key".into()),
            ..TlsArgs::default()
        }
    }

    fn client_side(a: &TlsArgs, urls: &[&str]) -> Result<Option<ServerFiles>, String> {
        settings(a, urls, "http://127.0.0.1:2380", &["http://127.0.0.1:2380"]).map(|s| s.0)
    }

    #[test]
    fn client_urls_may_mix_schemes_and_https_needs_a_certificate() {
        let mixed = ["http://127.0.0.1:2379", "https://127.0.0.1:2381"];
        let tls = client_side(&with_certificate(), &mixed).unwrap().expect("TLS for https://");
        assert_eq!(tls.cert_file, PathBuf::from("server.crt"));
        assert!(tls.http1, "the client port offers http/1.1 too");
        assert_eq!(client_side(&with_certificate(), &mixed[..1]), Ok(None), "http:// only");
        let e = client_side(&TlsArgs::default(), &mixed).unwrap_err();
        assert_eq!(
            e,
            "TLS key/cert (--cert-file, --key-file) must be provided for client url \
             https://127.0.0.1:2381 with HTTPS scheme"
        );
    }

    #[test]
    fn the_peer_port_offers_h2_only() {
        let a = TlsArgs {
            peer_cert_file: Some("peer.crt".into()),
            peer_key_file: Some("peer.key".into()),
            ..TlsArgs::default()
        };
        let (_, peer, _) =
            settings(&a, &["http://127.0.0.1:2379"], "https://127.0.0.1:2380", &[]).unwrap();
        assert!(!peer.expect("TLS on the peer port").http1);
    }
}
