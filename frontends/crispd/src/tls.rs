//! TLS on the TCP listener: the rustls server configuration built from
//! `[tls]` (certificate chain, key, optional client CA), read at start and
//! on SIGHUP. rustls itself is sans-I/O; `conn.rs` drives each session
//! (`read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`),
//! as rustls' own mio server example does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientAuth, TlsConfig};

/// Plaintext waiting for the handshake, and TLS records waiting for the
/// socket, each at most this much per connection (rustls' default, said
/// out loud): with `conn.rs`'s own output limit, what bounds a TLS
/// connection's memory.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// What new TLS connections are accepted with.
#[derive(Clone)]
pub struct Acceptor {
    pub config: Arc<ServerConfig>,
    /// A handshake not finished by then is closed.
    pub handshake_timeout: Duration,
}

impl Acceptor {
    /// Read the files `[tls]` names and build the server configuration:
    /// TLS 1.2 and 1.3 with ring, ALPN "h2" only (gRPC), client
    /// certificates verified against `client_ca_file` when it is set.
    pub fn load(c: &TlsConfig) -> Result<Self, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let certs = read_certs(&c.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| TlsError::File {
            path: c.key_file.clone(),
            what: "private key",
            why: e.to_string(),
        })?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?;
        let builder = match &c.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::File {
                        path: path.clone(),
                        what: "CA certificate",
                        why: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match c.client_auth {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    ClientAuth::Required => verifier,
                };
                let verifier = verifier.build().map_err(|e| TlsError::File {
                    path: path.clone(),
                    what: "CA certificates",
                    why: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(TlsError::Rustls)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Resumption tickets are one more thing to keep per client; a CRI
        // client reconnects rarely.
        config.send_tls13_tickets = 0;
        Ok(Self {
            config: Arc::new(config),
            handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
        })
    }

    /// A server session for one accepted connection.
    pub fn session(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        let mut session = rustls::ServerConnection::new(Arc::clone(&self.config))?;
        session.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(session)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File {
        path: path.to_owned(),
        what: "certificates",
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Why `[tls]` cannot be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file is missing or holds no usable PEM.
    File {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    /// rustls refused the combination (a key that does not fit the
    /// certificate, ...).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, what, why } => {
                write!(f, "tls: cannot read {what} from {}: {why}", path.display())
            }
            Self::Rustls(e) => write!(f, "tls: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}
