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

/// Builds a rustls server config; `None` when TLS is off for this listener.
pub fn server_config(tls: &TlsConfig) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return match (&tls.cert, &tls.key) {
            (None, None) => Ok(None),
            _ => Err(TlsError::Incomplete),
        };
    };
    install_crypto_provider();
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder();
    let config = match &tls.client_ca {
        None => builder.with_no_client_auth().with_single_cert(chain, key)?,
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
                .with_single_cert(chain, key)?
        }
    };
    Ok(Some(Arc::new(config)))
}
