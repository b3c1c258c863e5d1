//! The subject common name of a certificate, and etcd's `--peer-cert-allowed-cn` check.
//!
//! rustls verifies chains but exposes no certificate fields, and one field does not
//! justify an X.509 parser dependency: [`common_name`] walks the DER (X.509, RFC 5280
//! §4.1) just far enough to find the subject's CN, bounds-checked at every step.

use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION_TAG: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

/// Splits one DER element off `input`: its tag, its contents, and what follows.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let length = rest[..octets].iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (length, &rest[octets..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

/// The subject common name of a DER certificate (the first CN if several), or `None`
/// if it has none or the DER is not a certificate.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION_TAG) {
        tbs = element(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (mut subject, _) = expect(tbs, SEQUENCE)?;
    while !subject.is_empty() {
        let (mut rdn, rest) = expect(subject, SET)?;
        subject = rest;
        while !rdn.is_empty() {
            let (attribute, rest) = expect(rdn, SEQUENCE)?;
            rdn = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid == CN_OID {
                let (_string_tag, text, _) = element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// A certificate [`AllowedCn`] refused: its common name (if it has one) and the one
/// allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefusedCn {
    pub(crate) common_name: Option<String>,
    pub(crate) allowed: String,
}

tokio::task_local! {
    /// Where [`AllowedCn`] leaves what it refused in the handshake this task runs, for
    /// the listener's one warning about the connection (see [`with_refused_cn`]).
    static REFUSED_CN: std::cell::RefCell<Option<RefusedCn>>;
}

/// Runs `handshake` and returns its output with the certificate [`AllowedCn`] refused
/// in it, if it refused one. The verifier itself logs nothing: the listener's
/// "rejected connection" warning (rate-limited, with the address) says it once.
pub(crate) async fn with_refused_cn<F: std::future::Future>(
    handshake: F,
) -> (F::Output, Option<RefusedCn>) {
    let run = async {
        let output = handshake.await;
        (output, REFUSED_CN.with(|refused| refused.borrow_mut().take()))
    };
    REFUSED_CN.scope(std::cell::RefCell::new(None), run).await
}

/// A client certificate verifier that also requires one subject common name
/// (`--peer-cert-allowed-cn`), as etcd's "CommonName authentication".
#[derive(Debug)]
pub(crate) struct AllowedCn {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: String,
}

impl AllowedCn {
    pub(crate) fn wrap(
        inner: Arc<dyn ClientCertVerifier>,
        allowed: String,
    ) -> Arc<dyn ClientCertVerifier> {
        Arc::new(AllowedCn { inner, allowed })
    }
}

impl ClientCertVerifier for AllowedCn {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let cn = common_name(end_entity);
        if cn.as_deref() == Some(self.allowed.as_str()) {
            return Ok(verified);
        }
        // Outside [`with_refused_cn`] (a bare rustls acceptor) nobody asks.
        let refused = RefusedCn { common_name: cn, allowed: self.allowed.clone() };
        let _ = REFUSED_CN.try_with(|slot| *slot.borrow_mut() = Some(refused));
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
