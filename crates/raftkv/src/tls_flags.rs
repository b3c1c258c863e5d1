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

/// Checks the flags against the URLs and builds the settings.
pub fn settings(
    a: &TlsArgs,
    listen_client_url: &str,
    listen_peer_url: &str,
    peer_urls: &[&str],
) -> Result<TlsSettings, String> {
    let client = listener(
        "client",
        "--",
        listen_client_url,
        (&a.cert_file, &a.key_file, &a.trusted_ca_file),
        a.client_cert_auth,
        None,
    )?;
    let peer = listener(
        "peer",
        "--peer-",
        listen_peer_url,
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

fn listener(
    kind: &str,
    prefix: &str,
    url: &str,
    (cert, key, ca): Files<'_>,
    client_cert_auth: bool,
    allowed_cn: Option<String>,
) -> Result<Option<ServerFiles>, String> {
    if !tls::is_https(url) {
        if cert.is_some() || key.is_some() {
            tracing::warn!(
                url,
                "scheme is HTTP while key and cert files are present; ignoring key and cert files"
            );
        }
        return Ok(None);
    }
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
    }))
}

/// etcdctl's TLS flags for `raftkv put/get/...` and `bench`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientTlsArgs {
    /// CA that signs the members' certificates, for https:// endpoints (PEM).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate, for members started with --client-cert-auth (PEM).
    #[arg(long = "cert", id = "tls_cert", requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    // Ids apart from the flag names: `put`, `get`... have a KEY argument.
    #[arg(long = "key", id = "tls_key", requires = "tls_cert")]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS to reach https:// endpoints with (`None`: no --cacert given).
    pub fn client_tls(&self) -> Result<Option<tls::ClientTls>, String> {
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
