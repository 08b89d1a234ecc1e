//! The serving certificate: loaded from PEM files and reloaded when they change on disk
//! (cert-manager rotates Secrets in place), or generated for development.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The files do not form a usable certificate.
    #[error("{0}")]
    Invalid(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Files of a generated development certificate.
#[derive(Debug, Clone)]
pub struct DevCertificate {
    /// The CA that signed the serving certificate (the webhook's `caBundle`).
    pub ca: PathBuf,
    /// The serving certificate, valid for `localhost` and `127.0.0.1`.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Generates (or reuses, if present) a development CA and a serving certificate for
/// `localhost`/`127.0.0.1` in `dir`. The CA is kept across restarts so clients that trust it
/// keep working.
pub fn dev_certificate(dir: &Path) -> Result<DevCertificate, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let files = DevCertificate {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let invalid = |e: rcgen::Error| TlsError::Invalid(format!("generating a dev certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(invalid)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meshgate development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(invalid)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(invalid)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(invalid)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "meshgate webhook (development)");
    let cert = params.signed_by(&key, &issuer).map_err(invalid)?;

    write_private(&files.key, key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, cert.pem()).map_err(|e| file_error(&files.cert, e))?;
    std::fs::write(&files.ca, ca_cert.pem()).map_err(|e| file_error(&files.ca, e))?;
    Ok(files)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    file.write_all(bytes).map_err(|e| file_error(path, e))
}

/// Reads a certificate chain and key into a [`CertifiedKey`], checking that they match.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| file_error(cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert_path, e))?;
    if certs.is_empty() {
        return Err(file_error(cert_path, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| file_error(key_path, e))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(key_path, e))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|e| {
        TlsError::Invalid(format!(
            "{} and {} do not belong together: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    Ok(certified)
}

/// Serves the current certificate; [`ReloadingCertificate::reload_if_changed`] swaps it when
/// the files change. Handshakes in flight keep the certificate they started with.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// File contents the key was built from, to notice any change (including same-second
    /// rewrites that mtime would miss).
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl ReloadingCertificate {
    /// Loads the files once; an error here fails startup.
    pub fn new(cert_path: PathBuf, key_path: PathBuf) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let loaded = Self::read(&cert_path, &key_path, &provider)?;
        Ok(Self {
            cert_path,
            key_path,
            provider,
            state: RwLock::new(loaded),
        })
    }

    fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
        let cert_pem = std::fs::read(cert).map_err(|e| file_error(cert, e))?;
        let key_pem = std::fs::read(key).map_err(|e| file_error(key, e))?;
        Ok(Loaded {
            key: Arc::new(load_certified_key(cert, key, provider)?),
            cert_pem,
            key_pem,
        })
    }

    /// Rereads the files; swaps the certificate when they changed and are valid. Returns
    /// whether it swapped. On an invalid pair the old certificate stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let cert_pem =
            std::fs::read(&self.cert_path).map_err(|e| file_error(&self.cert_path, e))?;
        let key_pem = std::fs::read(&self.key_path).map_err(|e| file_error(&self.key_path, e))?;
        {
            let state = self
                .state
                .read()
                .map_err(|_| TlsError::Invalid("lock poisoned".into()))?;
            if state.cert_pem == cert_pem && state.key_pem == key_pem {
                return Ok(false);
            }
        }
        let loaded = Self::read(&self.cert_path, &self.key_path, &self.provider)?;
        let mut state = self
            .state
            .write()
            .map_err(|_| TlsError::Invalid("lock poisoned".into()))?;
        *state = loaded;
        Ok(true)
    }

    /// The crypto provider the server uses.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.state.read().ok().map(|s| s.key.clone())
    }
}

/// A rustls server configuration (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN) serving the
/// reloading certificate. With `client_ca`, a PEM bundle, every client must present a
/// certificate chaining to one of its CAs: without one, the handshake fails.
pub fn server_config(
    cert: Arc<ReloadingCertificate>,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(cert.provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, cert.provider())?),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A verifier that requires a client certificate chaining to a CA of the PEM bundle `path`.
pub fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
        roots
            .add(cert.map_err(|e| file_error(path, e))?)
            .map_err(|e| file_error(path, e))?;
    }
    if roots.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block found"));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| file_error(path, e))
}

/// Checks the files every `interval` and swaps the certificate when they change.
pub fn spawn_reloader(cert: Arc<ReloadingCertificate>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let cert = cert.clone();
            match tokio::task::spawn_blocking(move || cert.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!("serving certificate reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "serving certificate not reloaded; keeping the current one")
                }
                Err(e) => tracing::error!(error = %e, "certificate reload task failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_generated_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev_certificate(dir.path()).unwrap();
        let ca = std::fs::read(&first.ca).unwrap();
        let again = dev_certificate(dir.path()).unwrap();
        assert_eq!(std::fs::read(&again.ca).unwrap(), ca);
        let cert = ReloadingCertificate::new(first.cert, first.key).unwrap();
        assert!(!cert.reload_if_changed().unwrap());
    }

    #[test]
    fn mismatched_or_broken_files_are_refused_and_the_old_certificate_stays() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let a = dev_certificate(a.path()).unwrap();
        let b = dev_certificate(b.path()).unwrap();
        let err = ReloadingCertificate::new(a.cert.clone(), b.key.clone()).unwrap_err();
        assert!(err.to_string().contains("do not belong together"), "{err}");

        let cert = ReloadingCertificate::new(a.cert.clone(), a.key.clone()).unwrap();
        std::fs::write(&a.cert, "not a certificate").unwrap();
        assert!(cert.reload_if_changed().is_err());
        std::fs::copy(&b.cert, &a.cert).unwrap();
        std::fs::copy(&b.key, &a.key).unwrap();
        assert!(cert.reload_if_changed().unwrap());
    }
}
