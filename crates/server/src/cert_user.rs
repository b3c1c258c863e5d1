//! Client-certificate users: etcd's rule that, under `--client-cert-auth` with auth
//! enabled, a request without a token runs as the user named by the common name of the
//! client's verified certificate (etcd's `AuthInfoFromTLS`).
//!
//! The certificate is known where TLS ends, in the client port's accept stream; the
//! user is needed by the request handlers. [`CertifiedConnection`] carries the common
//! name from the one to the other: it wraps each decrypted connection and reports the
//! name as the connection's info, which tonic puts into every request's extensions,
//! and [`with_connection_user`] turns it into the [`ConnectionUser`] that
//! `Api::caller` reads. (tonic's own `TlsConnectInfo` cannot be named without its TLS
//! features, which would also change how its channels treat `https://` URLs.)
//!
//! The client port asks for a certificate, and rustls verifies it against
//! `--trusted-ca-file`, only under `--client-cert-auth`: without that flag no
//! connection has a certificate and no request gets a user here, as etcd consults
//! certificates only when client certificate auth is on. A token, when a request
//! carries one, still wins.

use crate::auth::ConnectionUser;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// The user a connection's client certificate names, as the connection's info.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertificateUser(pub Option<ConnectionUser>);

/// A decrypted client connection and the common name of its client certificate.
pub struct CertifiedConnection<IO> {
    io: IO,
    user: ClientCertificateUser,
}

impl<IO> CertifiedConnection<IO> {
    /// The connection `io` whose handshake ended with `certificates` from the client
    /// (the first is the client's own).
    pub fn new(io: IO, certificates: Option<&[impl AsRef<[u8]>]>) -> Self {
        let cn = certificates.and_then(|c| c.first()).and_then(|c| tls::common_name(c.as_ref()));
        CertifiedConnection { io, user: ClientCertificateUser(cn.map(ConnectionUser)) }
    }
}

/// Wraps every connection the TLS accept stream yields.
pub fn wrap_incoming<S, IO>(
    incoming: S,
) -> impl Stream<Item = io::Result<CertifiedConnection<tls::ServerTlsStream<IO>>>>
where
    S: Stream<Item = io::Result<tls::ServerTlsStream<IO>>>,
{
    incoming.map(|accepted| {
        accepted.map(|stream| {
            let certificates = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
            CertifiedConnection::new(stream, certificates.as_deref())
        })
    })
}

impl<IO> Connected for CertifiedConnection<IO> {
    type ConnectInfo = ClientCertificateUser;

    fn connect_info(&self) -> ClientCertificateUser {
        self.user.clone()
    }
}

/// Puts the connection's certificate user, if any, into the request as its
/// [`ConnectionUser`]; a request never keeps one it did not get from its connection.
pub fn with_connection_user<B>(mut req: http::Request<B>) -> http::Request<B> {
    let user = req.extensions().get::<ClientCertificateUser>().and_then(|u| u.0.clone());
    match user {
        Some(user) => {
            req.extensions_mut().insert(user);
        }
        None => {
            req.extensions_mut().remove::<ConnectionUser>();
        }
    }
    req
}

impl<IO: AsyncRead + Unpin> AsyncRead for CertifiedConnection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CertifiedConnection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_of(req: &http::Request<()>) -> Option<&ConnectionUser> {
        req.extensions().get::<ConnectionUser>()
    }

    #[test]
    fn a_certificate_user_reaches_the_request_and_no_other_user_survives() {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(ClientCertificateUser(Some(ConnectionUser("carol".into()))));
        let req = with_connection_user(req);
        assert_eq!(user_of(&req), Some(&ConnectionUser("carol".into())));

        let mut forged = http::Request::new(());
        forged.extensions_mut().insert(ConnectionUser("root".into()));
        forged.extensions_mut().insert(ClientCertificateUser(None));
        assert_eq!(user_of(&with_connection_user(forged)), None);
    }

    #[test]
    fn a_connection_without_certificates_names_no_user() {
        let none: Option<&[Vec<u8>]> = None;
        let c = CertifiedConnection::new((), none);
        assert_eq!(c.connect_info(), ClientCertificateUser(None));
        let garbage = CertifiedConnection::new((), Some(&[vec![0x30, 0x03, 1, 2, 3]][..]));
        assert_eq!(garbage.connect_info(), ClientCertificateUser(None));
    }
}
