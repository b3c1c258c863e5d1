//! What a server speaks on a port, whatever its URL's scheme says: for a client whose
//! calls fail, to tell "you wrote http:// for a TLS port" (and the reverse) from other
//! failures. Both checks are a few bytes on a connection of their own, each within the
//! caller's timeout.

use crate::diagnose::{failure, Failure};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

/// The HTTP/2 client preface and an empty SETTINGS frame: an HTTP/2 server without TLS
/// answers with its own SETTINGS frame at once.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// What a server turned out to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    /// HTTP/2 without TLS (an `http://` URL's port).
    PlainHttp2,
    /// TLS (an `https://` URL's port).
    Tls,
}

/// What the server at `host:port` speaks, if it is the other of the two: with
/// `expect_tls`, [`Speaks::PlainHttp2`] if it answers HTTP/2 in the clear; without,
/// [`Speaks::Tls`] if it answers a TLS handshake. `None` if it speaks what is expected,
/// neither, does not answer within `timeout`, or cannot be reached.
pub async fn speaks_otherwise(
    host: &str,
    port: u16,
    expect_tls: bool,
    timeout: Duration,
) -> Option<Speaks> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let check = async {
        if expect_tls {
            plain_http2(host, port).await.then_some(Speaks::PlainHttp2)
        } else {
            speaks_tls(host, port).await.then_some(Speaks::Tls)
        }
    };
    tokio::time::timeout(timeout, check).await.ok().flatten()
}

/// Whether `host:port` answers the HTTP/2 preface with a SETTINGS frame, in the clear.
async fn plain_http2(host: &str, port: u16) -> bool {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect((host, port)).await?;
        conn.write_all(HTTP2_PREFACE).await?;
        let mut header = [0u8; 9];
        conn.read_exact(&mut header).await?;
        Ok::<_, std::io::Error>(header)
    };
    // A frame header: 3 bytes of length, the type (4: SETTINGS), flags, stream 0.
    attempt.await.is_ok_and(|h| h[3] == 0x04 && h[5..9] == [0, 0, 0, 0])
}

/// Whether `host:port` answers a TLS handshake as a TLS server: it sent its certificate
/// (which we do not check: no CA is trusted here) or a TLS alert.
async fn speaks_tls(host: &str, port: u16) -> bool {
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .with_root_certificates(Arc::new(rustls::RootCertStore::empty()))
        .with_no_client_auth();
    let Ok(name) = ServerName::try_from(host.to_string()) else { return false };
    let Ok(tcp) = tokio::net::TcpStream::connect((host, port)).await else { return false };
    match tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await {
        Ok(_) => true,
        Err(e) => matches!(
            failure(&e),
            Some(
                Failure::RefusedTheirs(_)
                    | Failure::RefusedOurs(_)
                    | Failure::Other(rustls::Error::AlertReceived(_))
            )
        ),
    }
}
