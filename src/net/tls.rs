//! TLS for the TURN-over-TLS listeners (rustls, ring provider): TLS 1.2 and 1.3 only
//! (rustls has no renegotiation and nothing older), ALPN `stun.turn` (RFC 7443), and a
//! certificate that can be replaced while the server runs.
//!
//! Every TLS listener shares one [`rustls::ServerConfig`] whose certificate comes from a
//! [`CertStore`]. A reload reads and checks the PEM files first and swaps the certificate
//! only when they are good, so new handshakes see the new certificate, connections already
//! up keep theirs, and a bad file leaves the old certificate serving.

use crate::config::TlsFiles;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// The one ALPN protocol id offered, `stun.turn` (RFC 7443). rustls applies RFC 7301
/// section 3.2 to the rest: a client that sends no ALPN extension (Chromium sends none) is
/// served without one, and a client whose list has no `stun.turn` (only
/// `stun.nat-discovery`, say: RFC 5780 NAT behaviour discovery is not implemented) is
/// refused with a fatal no_application_protocol alert rather than served a protocol it
/// did not ask for.
const ALPN: [&[u8]; 1] = [b"stun.turn"];

/// The serving certificate, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files when last loaded (for change detection).
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// Loads the certificate chain and key; an error names the file and the problem.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = read_pair(&files, &provider)?;
        Ok(Arc::new(Self {
            stamp: RwLock::new(stamp(&files)),
            files,
            current: RwLock::new(Arc::new(key)),
            provider,
        }))
    }

    /// The server configuration every TLS listener uses.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // Clients reconnect rarely; tickets would only add state.
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
        Ok(Arc::new(cfg))
    }

    /// Re-reads the files. On success new handshakes use the new certificate; on failure
    /// the old one stays and the error is returned.
    pub fn reload(&self) -> Result<(), String> {
        let key = read_pair(&self.files, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        if let Ok(mut s) = self.stamp.write() {
            *s = stamp(&self.files);
        }
        Ok(())
    }

    /// Reloads when either file's modification time changed since the last load. Returns
    /// `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
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
/// and the key belongs to the first certificate.
fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let cert_path = files.cert.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("cert {cert_path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cert {cert_path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("cert {cert_path}: no CERTIFICATE in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.pkey)
        .map_err(|e| format!("pkey {}: {e}", files.pkey.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("cert {cert_path} with pkey {}: {e}", files.pkey.display()))
}
