//! Why a TLS handshake failed, in words an operator can act on, and a log of refused
//! connections that names each remote address without flooding.
//!
//! rustls reports a failed handshake as a typed [`rustls::Error`] inside the
//! `io::Error` the stream returns, and callers above wrap that again. The two failures
//! an operator meets most with mutual TLS are told apart by that type, never by the
//! message text:
//!
//! - **the other side refused our certificate**: it sent a certificate alert,
//!   `AlertReceived(BadCertificate | UnknownCA | ...)`. In TLS 1.3 a dialer finishes its
//!   half of the handshake before the server has checked the dialer's certificate, so
//!   the dialer learns this at its first read, not at connect;
//! - **we refused theirs**: our verifier said why, `InvalidCertificate(UnknownIssuer |
//!   NotValidForName | ...)`.
//!
//! A Go peer (etcd) answers every client-certificate failure with `bad certificate`;
//! rustls answers an unknown CA with `unknown CA`, a failed `--peer-cert-allowed-cn`
//! check with `access denied`. The advice covers both.
//!
//! gRPC loses the type: h2 keeps only the kind and text of an I/O error that ends a
//! connection. [`crate::ClientTls::probe`] therefore asks again on a connection of its
//! own when a gRPC call failed and the reason matters.

use std::collections::HashMap;
use std::error::Error;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_rustls::rustls::{self, AlertDescription, CertificateError};

/// How deep [`failure`] follows an error's sources.
const SOURCE_DEPTH_MAX: usize = 16;

/// A failed TLS handshake, as one side of it sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The other side refused our certificate: it sent this certificate alert.
    RefusedOurs(AlertDescription),
    /// We refused the other side's certificate, for this reason.
    RefusedTheirs(CertificateError),
    /// The other side sent no certificate where one is required (a listener's view).
    NoCertificate,
    /// Any other TLS failure: no common version or cipher suite, a peer that does not
    /// speak TLS, a non-certificate alert.
    Other(rustls::Error),
}

/// Whether an alert is the other side's verdict on our certificate.
fn about_a_certificate(alert: AlertDescription) -> bool {
    use AlertDescription as A;
    matches!(
        alert,
        A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::NoCertificate
            | A::CertificateRequired
            | A::DecryptError
    )
}

impl Failure {
    fn from_rustls(error: &rustls::Error) -> Failure {
        match error {
            rustls::Error::AlertReceived(alert) if about_a_certificate(*alert) => {
                Failure::RefusedOurs(*alert)
            }
            rustls::Error::InvalidCertificate(why) => Failure::RefusedTheirs(why.clone()),
            rustls::Error::NoCertificatesPresented => Failure::NoCertificate,
            other => Failure::Other(other.clone()),
        }
    }
}

/// The TLS failure somewhere in `error` or its sources (looking inside `io::Error`s,
/// whose own `source` skips the error they carry), or `None` if it is not a TLS failure
/// (connection refused, a timeout...).
pub fn failure(error: &(dyn Error + 'static)) -> Option<Failure> {
    let mut next = Some(error);
    for _ in 0..SOURCE_DEPTH_MAX {
        let e = next?;
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(Failure::from_rustls(r));
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            let inner: &(dyn Error + 'static) = inner;
            if let Some(found) = failure(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

/// An alert's name as TLS (and Go's `remote error: tls: ...`) says it.
fn alert_text(alert: AlertDescription) -> String {
    use AlertDescription as A;
    let text = match alert {
        A::BadCertificate => "bad certificate",
        A::UnsupportedCertificate => "unsupported certificate",
        A::CertificateRevoked => "revoked certificate",
        A::CertificateExpired => "expired certificate",
        A::CertificateUnknown => "unknown certificate",
        A::UnknownCA => "unknown certificate authority",
        A::AccessDenied => "access denied",
        A::NoCertificate | A::CertificateRequired => "certificate required",
        A::DecryptError => "decrypt error",
        A::HandshakeFailure => "handshake failure",
        A::ProtocolVersion => "protocol version not supported",
        other => return format!("alert {other:?}"),
    };
    text.to_string()
}

/// A certificate error in X.509 terms.
fn certificate_text(why: &CertificateError) -> String {
    use CertificateError as C;
    match why {
        C::UnknownIssuer => "unknown issuer".into(),
        C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
        C::NotValidForName => "certificate not valid for this host".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "certificate not allowed for this use (extended key usage)".into()
        }
        C::ApplicationVerificationFailure => "common name not allowed".into(),
        C::BadSignature => "bad signature".into(),
        C::Revoked => "certificate revoked".into(),
        // rustls's own words, which name what it found (expected host, presented names).
        other => other.to_string(),
    }
}

/// The flags a dialer's advice names: ours, and the other side's.
pub(crate) struct DialerFlags {
    pub(crate) ca: &'static str,
    pub(crate) cert: &'static str,
    pub(crate) key: &'static str,
}

impl DialerFlags {
    /// The other side's CA flag and whose it is: a member dialling a peer meets the
    /// cluster's `--peer-trusted-ca-file`; a client meets the members'
    /// `--trusted-ca-file`.
    fn remote_ca(&self) -> (&'static str, &'static str) {
        if self.cert.starts_with("--peer-") {
            ("the cluster's", "--peer-trusted-ca-file")
        } else {
            ("the server's", "--trusted-ca-file")
        }
    }

    /// What a dialer tells its operator about `failure` (after the peer's URL).
    pub(crate) fn explain(&self, failure: &Failure) -> String {
        let (cert, key, ca) = (self.cert, self.key, self.ca);
        match failure {
            Failure::RefusedOurs(alert) => {
                let (whose, remote_ca) = self.remote_ca();
                let advice = match alert {
                    AlertDescription::CertificateExpired => {
                        format!("check the dates of {cert} and both hosts' clocks")
                    }
                    AlertDescription::NoCertificate | AlertDescription::CertificateRequired => {
                        format!("it requires a client certificate: give {cert} and {key}")
                    }
                    AlertDescription::UnsupportedCertificate => format!(
                        "check that {cert} has the clientAuth extended key usage (a peer \
                         certificate needs serverAuth and clientAuth)"
                    ),
                    AlertDescription::AccessDenied => format!(
                        "check that {cert} has the common name {whose} --peer-cert-allowed-cn \
                         requires"
                    ),
                    AlertDescription::CertificateRevoked => format!("{cert} was revoked"),
                    _ => format!("check that {cert} is issued by a CA in {whose} {remote_ca}"),
                };
                format!("refused our TLS handshake ({}: {advice})", alert_text(*alert))
            }
            Failure::RefusedTheirs(why) => {
                let advice = match why {
                    CertificateError::UnknownIssuer => {
                        format!("check that our {ca} holds the CA that issued its certificate")
                    }
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => {
                        "check that its certificate's subject alternative names include the \
                         host of its URL"
                            .to_string()
                    }
                    CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. } => {
                        "check its certificate's dates and both hosts' clocks".to_string()
                    }
                    CertificateError::InvalidPurpose
                    | CertificateError::InvalidPurposeContext { .. } => {
                        "its certificate needs the serverAuth extended key usage".to_string()
                    }
                    _ => format!("check its certificate against our {ca}"),
                };
                format!(
                    "presented a certificate we do not trust ({}: {advice})",
                    certificate_text(why)
                )
            }
            Failure::NoCertificate => "sent no certificate in the TLS handshake".to_string(),
            Failure::Other(e) => format!("failed the TLS handshake ({e})"),
        }
    }
}

/// What a listener with flags `prefix` (`--` or `--peer-`) logs about a connection
/// whose handshake failed with `error` (after "rejected connection from ADDRESS: "),
/// with the common name `--peer-cert-allowed-cn` refused if it refused one.
pub(crate) fn explain_rejection(
    prefix: &str,
    error: &io::Error,
    refused_cn: Option<&crate::cn::RefusedCn>,
) -> String {
    let Some(failure) = failure(error) else {
        return format!("TLS handshake failed ({error})");
    };
    let remote_ca = if prefix == "--peer-" { "its --peer-trusted-ca-file" } else { "its --cacert" };
    match failure {
        Failure::RefusedTheirs(why) => {
            let advice = match why {
                CertificateError::UnknownIssuer => {
                    format!("it is not issued by a CA in {prefix}trusted-ca-file")
                }
                CertificateError::ApplicationVerificationFailure => match refused_cn {
                    Some(crate::cn::RefusedCn { common_name: Some(cn), allowed }) => format!(
                        "its common name {cn:?} is not the one {prefix}cert-allowed-cn allows \
                         ({allowed:?})"
                    ),
                    Some(crate::cn::RefusedCn { common_name: None, allowed }) => format!(
                        "it has no common name; {prefix}cert-allowed-cn allows only {allowed:?}"
                    ),
                    None => {
                        format!("its common name is not the one {prefix}cert-allowed-cn allows")
                    }
                },
                _ => format!("checked against {prefix}trusted-ca-file"),
            };
            format!("its certificate is refused ({}: {advice})", certificate_text(&why))
        }
        Failure::NoCertificate => {
            format!("it sent no certificate, which {prefix}client-cert-auth requires")
        }
        Failure::RefusedOurs(alert) => format!(
            "it refused our certificate ({}: check that {prefix}cert-file is issued by a CA in \
             {remote_ca})",
            alert_text(alert)
        ),
        Failure::Other(e) => format!("TLS handshake failed ({e})"),
    }
}

/// Most remote addresses and causes [`RejectionLog`] keeps apart; past it, new ones
/// share one entry, so a flood from many addresses costs bounded memory and bounded
/// lines.
pub const REJECTION_LOG_ADDRESSES_MAX: usize = 1024;
/// At most one warning per remote address and cause per this long.
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate limit for "rejected connection" warnings: the first rejection from an address
/// for a cause is logged at once, further ones at most once per
/// [`REJECTION_LOG_INTERVAL`] with a count of those not logged. A peer whose certificate
/// is refused redials every few seconds for as long as it runs; etcd logs each attempt.
/// Keyed by address (without the port, new for each connection) and cause, so another
/// cause from the same host is not hidden.
#[derive(Default)]
pub struct RejectionLog {
    /// Per address and cause (`(None, "")`: the shared entry past the bound): when a
    /// warning was last logged, and rejections since then that were not.
    entries: Mutex<HashMap<RejectionKey, (Instant, u64)>>,
}

/// A remote address (without the port) and the cause of its rejection.
type RejectionKey = (Option<IpAddr>, String);

impl RejectionLog {
    /// Records a rejection from `remote` for `cause` at `now`; `Some(n)` if it is to be
    /// logged now, `n` being the rejections not logged since the last warning.
    pub fn admit(&self, remote: Option<SocketAddr>, cause: &str, now: Instant) -> Option<u64> {
        let mut entries = self.entries.lock().expect("rejection log lock");
        let mut key = (remote.map(|a| a.ip()), cause.to_string());
        if !entries.contains_key(&key) && entries.len() >= REJECTION_LOG_ADDRESSES_MAX {
            entries.retain(|_, (at, _)| now.duration_since(*at) < REJECTION_LOG_INTERVAL);
            if entries.len() >= REJECTION_LOG_ADDRESSES_MAX {
                key = (None, String::new());
            }
        }
        match entries.get_mut(&key) {
            Some((at, quiet)) if now.duration_since(*at) < REJECTION_LOG_INTERVAL => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                *at = now;
                Some(std::mem::take(quiet))
            }
            None => {
                entries.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// Endpoints and why each failed, as one line with one clause per distinct cause (the
/// members of a cluster usually share a CA, so they fail for the same reason):
/// `{one}URL cause` for a cause of one endpoint, `{many}URL, URL each cause` for more,
/// in the order the causes first appear. `one` and `many` name the endpoints
/// (`"peer "` / `"peers "`, or empty).
pub fn join_by_cause<'a>(
    failures: impl IntoIterator<Item = (&'a str, &'a str)>,
    one: &str,
    many: &str,
) -> String {
    let mut causes: Vec<(&str, Vec<&str>)> = Vec::new();
    for (endpoint, why) in failures {
        match causes.iter_mut().find(|(w, _)| *w == why) {
            Some((_, endpoints)) => endpoints.push(endpoint),
            None => causes.push((why, vec![endpoint])),
        }
    }
    let clause = |(why, endpoints): &(&str, Vec<&str>)| match endpoints.as_slice() {
        [single] => format!("{one}{single} {why}"),
        several => format!("{many}{} each {why}", several.join(", ")),
    };
    causes.iter().map(clause).collect::<Vec<_>>().join("; ")
}
