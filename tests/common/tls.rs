//! Test certificates: a private CA and a server certificate for 127.0.0.1 / localhost.
//!
//! [`TestPki::new`] makes a fresh CA (ECDSA P-256) and a server certificate it signs, and
//! writes them into a new directory under the system temp dir (removed on drop):
//!
//! - `server-chain.pem`: the server certificate, then the CA certificate (the `cert` key);
//! - `server-key.pem`: the server's private key, PKCS#8 (the `pkey` key);
//! - `ca.pem`: the CA certificate alone, for clients that take a trust anchor file.
//!
//! Clients in tests trust the CA through [`TestPki::client_config`] (rustls, ALPN
//! `stun.turn`) and verify the server's certificate for the IP address 127.0.0.1.
//! [`TestPki::replace_server_cert`] issues a different server certificate from the same
//! CA and overwrites the two server files, for certificate reload tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::process::TempDir;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};

/// The ALPN protocol name of TURN over TLS (RFC 7443).
pub const ALPN_TURN: &[u8] = b"stun.turn";
/// The names every server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];
/// How long the TLS handshake in [`TestPki::connect`] may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A private CA, the server certificate it issued, and the files a server is given.
pub struct TestPki {
    /// The directory holding the three files; removed when this value is dropped.
    pub dir: TempDir,
    /// Server certificate then CA certificate, PEM (the `cert` configuration key).
    pub cert_chain_path: PathBuf,
    /// The server's private key, PKCS#8 PEM (the `pkey` configuration key).
    pub key_path: PathBuf,
    /// The CA certificate alone, PEM.
    pub ca_path: PathBuf,
    /// The CA certificate, DER: the one trust anchor of [`TestPki::client_config`].
    pub ca_der: CertificateDer<'static>,
    /// The server certificate the files hold now, DER.
    pub server_der: CertificateDer<'static>,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Server certificates issued so far (1 after `new`), so each one differs.
    issued: u32,
}

impl TestPki {
    /// A new CA and server certificate, written to a fresh temporary directory.
    pub fn new() -> TestPki {
        let dir = TempDir::new("tls");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "ferroturn test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let ca = CertifiedIssuer::self_signed(params, ca_key).expect("self-sign the CA");
        let ca_der = ca.der().clone();
        let ca_path = dir.join("ca.pem");
        write_atomically(&ca_path, ca.pem().as_bytes());

        let mut pki = TestPki {
            cert_chain_path: dir.join("server-chain.pem"),
            key_path: dir.join("server-key.pem"),
            ca_path,
            dir,
            ca_der,
            server_der: CertificateDer::from(Vec::new()),
            ca,
            issued: 0,
        };
        pki.replace_server_cert();
        pki
    }

    /// Issues a new server certificate with a new key (a different serial number and
    /// subject too) and overwrites the chain and key files with it. Each file is
    /// replaced by a rename, so a reader sees the old file or the new one, never half
    /// of one; between the two renames the chain is new and the key still old, so
    /// reload only after this returns. Returns the new certificate, also in
    /// `server_der`.
    pub fn replace_server_cert(&mut self) -> CertificateDer<'static> {
        self.issued += 1;
        let mut params = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())
            .expect("server names are valid");
        params.distinguished_name.push(
            DnType::CommonName,
            format!("ferroturn test server {}", self.issued),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let key = KeyPair::generate().expect("generate the server key");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("sign the server certificate");

        let chain = format!("{}{}", cert.pem(), self.ca.pem());
        write_atomically(&self.cert_chain_path, chain.as_bytes());
        write_atomically(&self.key_path, key.serialize_pem().as_bytes());
        self.server_der = cert.der().clone();
        self.server_der.clone()
    }

    /// TOML for `common::start_server`: a TLS listener on an ephemeral port with these
    /// files.
    pub fn server_toml(&self) -> String {
        format!(
            "tls-listening-port = 0\ncert = {}\npkey = {}\n",
            toml_string(&self.cert_chain_path),
            toml_string(&self.key_path),
        )
    }

    /// A rustls client (ring provider) that trusts only this CA and offers ALPN
    /// `stun.turn`.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("the CA certificate is a valid trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_TURN.to_vec()];
        Arc::new(config)
    }

    /// A DTLS client configuration (OpenSSL) that trusts only this CA.
    pub fn dtls_client_context(&self) -> openssl::ssl::SslContext {
        let ca = std::fs::read(&self.ca_path).expect("read the CA file");
        ferroturn::dtls::client_context(&ca).expect("a DTLS client configuration")
    }

    /// Connects to `addr` over TCP and completes a TLS handshake that verifies the
    /// server's certificate for IP 127.0.0.1 against this CA, within 10 seconds.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            connector.connect(server_name(), tcp).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(result) => result,
            Err(_elapsed) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TLS handshake with {addr} took over {CONNECT_TIMEOUT:?}"),
            )),
        }
    }
}

/// The name clients verify the server certificate for: IP address 127.0.0.1.
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(Ipv4Addr::LOCALHOST.into())
}

/// Valid from a day ago for 30 days: a realistic lifetime that no verifier (Chromium's
/// included) objects to, and no clock skew between here and a client matters.
fn set_validity(params: &mut CertificateParams) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - Duration::from_secs(24 * 3600);
    params.not_after = now + Duration::from_secs(30 * 24 * 3600);
}

/// Writes `bytes` to a sibling temporary file, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), path.display()));
}

/// `path` as a TOML basic string.
fn toml_string(path: &Path) -> String {
    let text = path.to_str().expect("temporary paths are UTF-8");
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}
