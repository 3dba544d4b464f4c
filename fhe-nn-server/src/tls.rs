//! TLS for the service, with rustls: a certificate chain and its private key from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A server's TLS configuration (cheap to clone).
#[derive(Clone)]
pub struct Tls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(rustls)")
    }
}

impl Tls {
    /// From PEM text: the certificate chain (the server's first) and its private key
    /// (PKCS#8, PKCS#1 or SEC1). Offers HTTP/1.1 only.
    pub fn from_pem(certificates: &[u8], key: &[u8]) -> Result<Tls, TlsError> {
        let chain = CertificateDer::pem_slice_iter(certificates)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "certificate",
                message: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                message: "no `BEGIN CERTIFICATE` block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            what: "private key",
            message: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// From PEM files (`--tls-cert`, `--tls-key`).
    pub fn from_pem_files(certificates: &Path, key: &Path) -> Result<Tls, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Io {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        Tls::from_pem(
            &read("certificate", certificates)?,
            &read("private key", key)?,
        )
    }
}
