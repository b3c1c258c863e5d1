//! Client-certificate users: etcd's rule that, under `--client-cert-auth` with auth
//! enabled, a request without a token runs as the user named by the common name of the
//! client's verified certificate (etcd's `AuthInfoFromTLS`).
//!
//! The certificate is known where TLS ends, in the client port's accept stream; the
//! user is needed by the request handlers. The client connection wrapper
//! ([`AuthorityFix`], which every client connection goes through anyway) carries the
//! common name from the one to the other: it reports the name as the connection's
//! info, which tonic puts into every request's extensions, and [`with_connection_user`]
//! turns it into the [`ConnectionUser`] that `Api::caller` reads. (tonic's own `TlsConnectInfo` cannot be named without its TLS
//! features, which would also change how its channels treat `https://` URLs.)
//!
//! The client port asks for a certificate, and rustls verifies it against
//! `--trusted-ca-file`, only under `--client-cert-auth`: without that flag no
//! connection has a certificate and no request gets a user here, as etcd consults
//! certificates only when client certificate auth is on. A token, when a request
//! carries one, still wins.

use crate::auth::ConnectionUser;
use crate::authority::AuthorityFix;
use std::io;
use tokio_stream::{Stream, StreamExt};

/// The user a connection's client certificate names, as the connection's info.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertificateUser(pub Option<ConnectionUser>);

impl ClientCertificateUser {
    /// The user named by the common name of the first of `certificates` (the client's
    /// own) that a handshake ended with; none without a certificate or a readable CN.
    pub fn of(certificates: Option<&[impl AsRef<[u8]>]>) -> Self {
        let cn = certificates.and_then(|c| c.first()).and_then(|c| tls::common_name(c.as_ref()));
        ClientCertificateUser(cn.map(ConnectionUser))
    }
}

/// Wraps every connection the TLS accept stream yields in the client connection
/// wrapper ([`AuthorityFix`]), carrying its certificate user.
pub fn wrap_incoming<S, IO>(
    incoming: S,
) -> impl Stream<Item = io::Result<AuthorityFix<tls::ServerTlsStream<IO>>>>
where
    S: Stream<Item = io::Result<tls::ServerTlsStream<IO>>>,
{
    incoming.map(|accepted| {
        accepted.map(|stream| {
            let certificates = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
            let user = ClientCertificateUser::of(certificates.as_deref());
            AuthorityFix::with_user(stream, user)
        })
    })
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
        use tonic::transport::server::Connected;
        let none: Option<&[Vec<u8>]> = None;
        assert_eq!(ClientCertificateUser::of(none), ClientCertificateUser(None));
        let garbage = ClientCertificateUser::of(Some(&[vec![0x30, 0x03, 1, 2, 3]][..]));
        assert_eq!(garbage, ClientCertificateUser(None));
        assert_eq!(AuthorityFix::new(()).connect_info(), ClientCertificateUser(None));
        let carol = ClientCertificateUser(Some(ConnectionUser("carol".into())));
        assert_eq!(AuthorityFix::with_user((), carol.clone()).connect_info(), carol);
    }
}
