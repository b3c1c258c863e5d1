//! Throwaway certificates: a CA and certificates it signs, written as PEM files. For
//! `raftkv playground --tls` and tests, never for production (the keys are written
//! unencrypted next to the certificates).
//!
//! Why `rcgen` rather than the `openssl` command: no process dependency (the playground
//! must work where no `openssl` is installed) and the same code in tests and playground.

use crate::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

fn err(e: impl std::fmt::Display) -> TlsError {
    TlsError(format!("generating a certificate: {e}"))
}

/// A CA able to sign certificates, and where its certificate is.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub cert_file: PathBuf,
}

/// A certificate and key written by [`TestCa::issue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The certificate's PEM file.
    pub cert_file: PathBuf,
    /// Its private key's PEM file.
    pub key_file: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|e| TlsError(format!("writing {}: {e}", path.display())))
}

impl TestCa {
    /// Makes a CA named `name` and writes its certificate to `dir/NAME.crt`.
    pub fn create(dir: &Path, name: &str) -> Result<TestCa, TlsError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| TlsError(format!("creating {}: {e}", dir.display())))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)?;
        let cert_file = dir.join(format!("{name}.crt"));
        write(&cert_file, &issuer.pem())?;
        Ok(TestCa { issuer, cert_file })
    }

    /// Issues a certificate with common name `cn`, valid for server and client use
    /// (peers are both) on `hosts` (names or IP addresses), and writes it to
    /// `dir/FILE.crt` and its key to `dir/FILE.key`.
    pub fn issue(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        hosts: &[&str],
    ) -> Result<Issued, TlsError> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(hosts).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        let issued = Issued {
            cert_file: dir.join(format!("{file}.crt")),
            key_file: dir.join(format!("{file}.key")),
        };
        write(&issued.key_file, &key.serialize_pem())?;
        write(&issued.cert_file, &cert.pem())?;
        Ok(issued)
    }
}
