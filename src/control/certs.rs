//! The serving certificate (rustls, ring provider: TLS 1.2 and 1.3 only, no
//! renegotiation), replaceable while the server runs.
//!
//! The TURN-over-TLS listeners, TURN over DTLS and the HTTPS API share one [`CertStore`].
//! A reload reads and checks the PEM files first and swaps the certificate only when
//! they are good, so new handshakes see the new certificate, connections already up keep
//! theirs, and a bad file leaves the old certificate serving. DTLS (OpenSSL) takes the
//! same chain and key as DER ([`CertStore::der`]) and rebuilds its configuration when the
//! [`CertStore::generation`] changes.

use crate::config::TlsFiles;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Why a certificate could not be loaded. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cert {}: {source}", file.display())]
    Cert {
        file: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("cert {}: no CERTIFICATE in the file", file.display())]
    NoCertificate { file: PathBuf },
    #[error("pkey {}: {source}", file.display())]
    Key {
        file: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("cert {} with pkey {}: {source}", cert.display(), pkey.display())]
    Mismatch {
        cert: PathBuf,
        pkey: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
}

/// The certificate chain (leaf first) and private key as DER, for DTLS.
#[derive(Clone, Debug)]
pub struct DerPair {
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
}

/// The serving certificate, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    der: RwLock<Arc<DerPair>>,
    /// Bumped by every successful reload.
    generation: AtomicU64,
    /// Modification times of the files when last loaded (for change detection).
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// Loads the certificate chain and key; an error names the file and the problem.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (key, der) = read_pair(&files, &provider)?;
        Ok(Arc::new(Self {
            stamp: RwLock::new(stamp(&files)),
            files,
            current: RwLock::new(Arc::new(key)),
            der: RwLock::new(Arc::new(der)),
            generation: AtomicU64::new(0),
            provider,
        }))
    }

    /// A server configuration serving this store's certificate (reloads apply to it),
    /// offering the ALPN protocol ids `alpn`.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, CertError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(CertError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Clients reconnect rarely; tickets would only add state.
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
        Ok(Arc::new(cfg))
    }

    /// Re-reads the files. On success new handshakes use the new certificate; on failure
    /// the old one stays and the error is returned.
    pub fn reload(&self) -> Result<(), CertError> {
        let (key, der) = read_pair(&self.files, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        if let Ok(mut current) = self.der.write() {
            *current = Arc::new(der);
        }
        self.generation.fetch_add(1, Ordering::Release);
        if let Ok(mut s) = self.stamp.write() {
            *s = stamp(&self.files);
        }
        Ok(())
    }

    /// Reloads when either file's modification time changed since the last load. Returns
    /// `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), CertError>> {
        let now = stamp(&self.files);
        let last = self.stamp.read().ok().and_then(|s| *s);
        if now.is_none() || now == last {
            return None;
        }
        let result = self.reload();
        if result.is_err() {
            // Do not retry the same bad files every time; wait for the next change.
            if let Ok(mut s) = self.stamp.write() {
                *s = now;
            }
        }
        Some(result)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The certificate chain and key in force, as DER.
    pub fn der(&self) -> Arc<DerPair> {
        self.der
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// How many times the certificate was replaced: a configuration built from
    /// [`CertStore::der`] is current while this has not changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

fn stamp(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.pkey)?))
}

/// Reads and checks a chain and its key: at least one certificate, a key rustls can use,
/// and the key belongs to the first certificate. Returns them for rustls and as DER.
fn read_pair(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, DerPair), CertError> {
    let cert_error = |source| CertError::Cert {
        file: files.cert.clone(),
        source,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(cert_error)?
        .collect::<Result<_, _>>()
        .map_err(cert_error)?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            file: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.pkey).map_err(|source| CertError::Key {
        file: files.pkey.clone(),
        source,
    })?;
    let der = DerPair {
        chain: chain.iter().map(|c| c.to_vec()).collect(),
        key: key.secret_der().to_vec(),
    };
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|source| CertError::Mismatch {
            cert: files.cert.clone(),
            pkey: files.pkey.clone(),
            source,
        })?;
    Ok((certified, der))
}

/// Reloads the certificate when its files change (checked every few seconds; SIGHUP
/// reloads at once), until `stop` is set.
pub fn watch(certs: Arc<CertStore>, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    const EVERY: Duration = Duration::from_secs(5);
    const TICK: Duration = Duration::from_millis(200);
    std::thread::Builder::new()
        .name("ferroturn-certs".into())
        .spawn(move || {
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(TICK);
                waited += TICK;
                if waited < EVERY {
                    continue;
                }
                waited = Duration::ZERO;
                match certs.reload_if_changed() {
                    Some(Ok(())) => tracing::info!(
                        cert = %certs.files().cert.display(),
                        "TLS certificate reloaded (files changed)"
                    ),
                    Some(Err(e)) => {
                        tracing::error!("TLS certificate not reloaded, the old one stays: {e}")
                    }
                    None => {}
                }
            }
        })
}
