//! TLS server configurations from PEM files (rustls, aws-lc-rs provider), shared by every
//! listener: MLLP, HTTP ingest and admin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: cannot read {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS: {path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// rustls's own words for these ("invalid peer certificate", "keys may not be
    /// consistent") name neither the file nor the fix.
    #[error("TLS: the certificate {cert} and the key {key} cannot be used: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS: client CA: {0}")]
    ClientCa(String),
    #[error("TLS: cert and key must both be set")]
    Incomplete,
}

/// Installs aws-lc-rs as the process's crypto provider. Called first thing in `main` (and by
/// tests): if any dependency also enables `ring`, rustls would otherwise panic at run time.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Why rustls refused a certificate and key pair, in the operator's terms.
fn pair_error(cert: &Path, key: &Path, error: rustls::Error) -> TlsError {
    let reason = match &error {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".into(),
        rustls::Error::InvalidCertificate(e) => format!(
            "the certificate is refused ({e:?}); an X.509 v1 certificate (what `openssl x509 -req` \
             makes without `-extfile`) is not accepted: issue a v3 one, with a subjectAltName"
        ),
        other => other.to_string(),
    };
    TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    }
}

/// Builds a rustls server config; `None` when TLS is off for this listener.
pub fn server_config(tls: &TlsConfig) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return match (&tls.cert, &tls.key) {
            (None, None) => Ok(None),
            _ => Err(TlsError::Incomplete),
        };
    };
    install_crypto_provider();
    let (cert_path, key_path) = (cert, key);
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder();
    let config = match &tls.client_ca {
        None => builder
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| pair_error(cert_path, key_path, e))?,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if tls.require_client_cert {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .map_err(|e| pair_error(cert_path, key_path, e))?
        }
    };
    Ok(Some(Arc::new(config)))
}

/// A TLS client config that trusts the CA certificates in `ca` (PEM) and, for mutual TLS,
/// presents `identity` (certificate chain and key, PEM). For `orbiter send`.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let chain = certificates(cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Pem {
                path: key_path.to_owned(),
                message: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| pair_error(cert_path, key_path, e))?
        }
    };
    Ok(Arc::new(config))
}

/// The subject common name (CN) of a DER certificate, if it has exactly one that is text.
///
/// Used for mutual TLS on the admin port, where a client certificate's CN names an API client
/// (as OpenHIM maps certificates to clients). Only called on certificates rustls has already
/// verified against the configured CA, and written as a bounded walk of the few DER structures
/// on the way to the subject (no panics, no recursion) rather than a general X.509 parser.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (tag, certificate, _) = der(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] EXPLICIT version
    }
    // serialNumber, signature, issuer, validity, then subject.
    for expected in [0x02, 0x30, 0x30, 0x30] {
        let (tag, _, after) = der(rest)?;
        if tag != expected {
            return None;
        }
        rest = after;
    }
    let (tag, mut subject, _) = der(rest)?;
    if tag != 0x30 {
        return None;
    }
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let mut found = None;
    while !subject.is_empty() {
        let (tag, mut set, after) = der(subject)?;
        subject = after;
        if tag != 0x31 {
            return None;
        }
        while !set.is_empty() {
            let (tag, attribute, after) = der(set)?;
            set = after;
            if tag != 0x30 {
                return None;
            }
            let (tag, oid, value) = der(attribute)?;
            if tag != 0x06 || oid != CN_OID {
                continue;
            }
            let (tag, text, _) = der(value)?;
            // UTF8String, PrintableString, IA5String.
            if !matches!(tag, 0x0c | 0x13 | 0x16) || found.is_some() {
                return None;
            }
            found = Some(std::str::from_utf8(text).ok()?.to_string());
        }
    }
    found
}

/// One DER TLV: (tag, contents, what follows). Single-byte tags, definite lengths up to 4 bytes.
/// (Also what `orbiter doctor` reads certificate expiry dates with.)
pub(crate) fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in names {
            params.distinguished_name.push(ty.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn finds_the_subject_cn() {
        let der = cert_with(&[
            (rcgen::DnType::OrganizationName, "Hospital"),
            (rcgen::DnType::CommonName, "ci-bot"),
        ]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("ci-bot"));
        assert_eq!(
            subject_common_name(&cert_with(&[(rcgen::DnType::OrganizationName, "H")])),
            None
        );
    }

    #[test]
    fn garbage_and_truncation_are_none_not_panics() {
        let der = cert_with(&[(rcgen::DnType::CommonName, "ci-bot")]);
        for cut in 0..der.len() {
            let _ = subject_common_name(&der[..cut]);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(b""), None);
    }
}
