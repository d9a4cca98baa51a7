//! TLS for SSL and SASL_SSL listeners (rustls): a PEM certificate chain and key that are
//! reloaded when their files change, so a renewed certificate takes effect without a
//! restart, and optional client certificates whose subject becomes the principal, checked
//! against a CA file that is reloaded the same way (a CA rotation adds the new CA first).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in {path} cannot be used: {error}")]
    Key { path: PathBuf, error: String },
    #[error("bad TLS settings: {0}")]
    Config(String),
}

/// Kafka's `ssl.client.auth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    /// A client certificate is checked if sent; clients without one are ANONYMOUS.
    Requested,
    Required,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates client certificates must chain to (needed unless client_auth = none).
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read {
            path: path.into(),
            error: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            path: path.into(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

fn load_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Read {
        path: files.key.clone(),
        error: e.to_string(),
    })?;
    let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        error: e.to_string(),
    })?;
    Ok(Arc::new(ck))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// How often a handshake may look at the files' modification times.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The certificate in use, reloaded at a handshake when its files have changed. A reload
/// that fails (a half-written file, a key that does not match) keeps the old certificate and
/// logs why: a renewal mistake must not take the listener down.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    state: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl Reloading {
    fn current(&self) -> Arc<CertifiedKey> {
        let mut cur = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if cur.checked.elapsed() >= RELOAD_CHECK {
            cur.checked = Instant::now();
            let stamps = (mtime(&self.files.cert), mtime(&self.files.key));
            if stamps != cur.stamps {
                match load_key(&self.files) {
                    Ok(k) => {
                        tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
                        cur.key = k;
                        cur.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed TLS certificate cannot be loaded; keeping the old one")
                    }
                }
            }
        }
        cur.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS side of a listener. Built at start-up (a bad file stops the start, with the file
/// named); afterwards each handshake takes [`Tls::acceptor`], which rebuilds the settings
/// when the client CA file has changed (the certificate reloads on its own, see
/// [`Reloading`]). A CA file that fails to load keeps the old settings and logs why.
pub struct Tls {
    files: TlsFiles,
    resolver: Arc<Reloading>,
    state: Mutex<CaState>,
}

struct CaState {
    config: Arc<rustls::ServerConfig>,
    stamp: Option<SystemTime>,
    checked: Instant,
}

impl Tls {
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsError> {
        let key = load_key(files)?;
        let resolver = Arc::new(Reloading {
            files: files.clone(),
            state: Mutex::new(Current {
                key,
                stamps: (mtime(&files.cert), mtime(&files.key)),
                checked: Instant::now(),
            }),
        });
        let stamp = files.client_ca.as_deref().and_then(mtime);
        let config = build(files, &resolver)?;
        Ok(Tls {
            files: files.clone(),
            resolver,
            state: Mutex::new(CaState {
                config,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The settings for a new connection's handshake.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ca) = self.files.client_ca.as_deref() else {
            return st.config.clone();
        };
        if self.files.client_auth != ClientAuth::None && st.checked.elapsed() >= RELOAD_CHECK {
            st.checked = Instant::now();
            let stamp = mtime(ca);
            if stamp != st.stamp {
                match build(&self.files, &self.resolver) {
                    Ok(a) => {
                        tracing::info!(client_ca = %ca.display(), "reloaded the client CA");
                        st.config = a;
                        st.stamp = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed client CA cannot be loaded; keeping the old one")
                    }
                }
            }
        }
        st.config.clone()
    }
}

fn build(
    files: &TlsFiles,
    resolver: &Arc<Reloading>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let resolver = resolver.clone();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth().with_cert_resolver(resolver),
        (_, None) => {
            return Err(TlsError::Config(
                "client_auth needs client_ca (the CA file client certificates chain to)".into(),
            ))
        }
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if auth == ClientAuth::Requested {
                v = v.allow_unauthenticated();
            }
            let v = v.build().map_err(|e| TlsError::Config(e.to_string()))?;
            builder
                .with_client_cert_verifier(v)
                .with_cert_resolver(resolver)
        }
    };
    // Records are carried by `server::tls`, which takes the traffic keys from rustls once
    // the handshake is done.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The principal of a verified client certificate: its subject as an RFC 4514 string
/// (Kafka's default `ssl.principal.mapping.rules`: `CN=client,OU=eng,O=acme`).
pub fn certificate_principal(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(c.tbs_certificate.subject.to_string())
}
