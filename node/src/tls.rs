//! Certificates: the development CA and node certificate made on first start, and the
//! rustls/quinn configurations built from PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating a key or certificate failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or parsed.
    #[error("reading {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A key file could not be created safely (it exists, is a link, or IO failed).
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretFileError),
}

/// Where a node's PEM files live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This node's certificate (signed by the CA).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

impl TlsPaths {
    /// The development layout under a data dir: `tls/ca.pem`, `tls/node.pem`, `tls/node.key`.
    pub fn dev(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        TlsPaths {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
        }
    }

    /// The CA's private key in the development layout (kept so `chorus certs` can sign).
    pub fn dev_ca_key(data_dir: &Path) -> PathBuf {
        data_dir.join("tls").join("ca.key")
    }
}

/// The parameters of a Chorus CA; deterministic so an issuer can be rebuilt from its key.
pub(crate) fn ca_params(name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Chorus");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = params.not_before + time_years(10);
    Ok(params)
}

pub(crate) fn time_years(years: i64) -> time::Duration {
    time::Duration::days(365 * years)
}

/// Makes a development CA and a node certificate for `localhost`, `127.0.0.1`, `::1` and
/// `extra_names`, and writes them (keys with mode 0600) where `paths` says, plus the CA
/// key beside the CA certificate. Does nothing if the node certificate already exists.
/// Returns whether it generated anything.
pub fn ensure_dev_certificates(
    paths: &TlsPaths,
    ca_key_path: &Path,
    node_name: &str,
    extra_names: &[String],
) -> Result<bool, TlsError> {
    if paths.cert.exists() && paths.key.exists() && paths.ca_cert.exists() {
        return Ok(false);
    }
    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params("Chorus development CA")?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        node_name.to_string(),
    ];
    names.extend(extra_names.iter().cloned());
    names.dedup();
    let mut node_params = CertificateParams::new(names)?;
    node_params
        .distinguished_name
        .push(DnType::CommonName, node_name);
    node_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node_params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    node_params.not_after = node_params.not_before + time_years(2);
    let node_key = KeyPair::generate()?;
    let node_cert = node_params.signed_by(&node_key, &issuer)?;

    write_file(&paths.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_file(ca_key_path, ca_key.serialize_pem().as_bytes(), true)?;
    write_file(&paths.cert, node_cert.pem().as_bytes(), false)?;
    write_file(&paths.key, node_key.serialize_pem().as_bytes(), true)?;
    Ok(true)
}

/// Writes a file, creating its directory. A `secret` file is created new with mode 0600
/// from the start and never through a symlink ([`crate::secrets::write_secret_file`]);
/// a public one (a certificate) is replaced.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    if secret {
        return Ok(crate::secrets::write_secret_file(path, contents)?);
    }
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

/// Loads a private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// This node's certificate and key as its endpoint presents them to clients and peers,
/// and as it presents them when it dials a peer. Rotating the files and reloading
/// (`chorus ctl reload`, SIGHUP) swaps them whole: connections made afterwards see the
/// new certificate, those already open keep theirs.
#[derive(Debug)]
pub struct NodeCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl NodeCert {
    /// Reads the certificate and key of `paths`.
    pub fn load(paths: &TlsPaths) -> Result<Arc<NodeCert>, TlsError> {
        Ok(Arc::new(NodeCert {
            current: std::sync::RwLock::new(Self::read(paths)?),
        }))
    }

    /// Reads a certificate chain and its key, refusing a key that does not match the
    /// certificate (it would fail every handshake).
    pub fn read(paths: &TlsPaths) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let certs = load_certs(&paths.cert)?;
        let key = load_key(&paths.key)?;
        let certified = rustls::sign::CertifiedKey::from_der(certs, key, &crypto_provider())
            .map_err(|e| TlsError::Pem {
                path: paths.key.clone(),
                reason: format!("does not fit {}: {e}", paths.cert.display()),
            })?;
        Ok(Arc::new(certified))
    }

    /// The certificate and key presented now.
    pub fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `candidate` holds another certificate chain than the one presented.
    pub fn differs(&self, candidate: &rustls::sign::CertifiedKey) -> bool {
        self.current().cert != candidate.cert
    }

    /// Presents `certified` to every connection made from now on.
    pub fn install(&self, certified: Arc<rustls::sign::CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = certified;
    }
}

impl rustls::client::ResolvesClientCert for NodeCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for NodeCert {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

/// The key QUIC stateless resets are made with, derived from the node's TLS key (HKDF-
/// SHA256), so that it is the same in every run of the node: a restarted node answers
/// packets of a connection its previous run held with a reset the peer recognises, and
/// clients and peers learn at once that the connection is gone instead of after their
/// idle timeout.
pub fn stateless_reset_key(key_path: &Path) -> Result<Arc<dyn quinn::crypto::HmacKey>, TlsError> {
    let secret = std::fs::read(key_path).map_err(|e| TlsError::Pem {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, &secret)
        .expand(b"chorus quic stateless reset", &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &okm,
    )))
}

/// The rustls crypto provider Chorus uses everywhere: ring, passed explicitly because more
/// than one provider is compiled into the binary.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The QUIC transport limits of the node's endpoint, every one chosen rather than left
/// to quinn's defaults (which allow an unbounded connection receive window and a
/// 10 MB send buffer per connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportLimits {
    /// Bidirectional streams a peer may have open at once.
    pub max_concurrent_bidi_streams: u32,
    /// Without traffic for this long a connection is closed (also bounds a handshake).
    pub idle_timeout: std::time::Duration,
    /// Bytes a peer may send on one stream ahead of the node's reading.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on one connection ahead of the node's reading.
    pub receive_window: u32,
    /// Bytes of unacknowledged data the node buffers per connection.
    pub send_window: u32,
}

/// Unidirectional streams a peer may open: none, the protocols use only bidirectional
/// ones, so a uni stream can buffer nothing.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 0;
/// The server sends no keep-alives: a client that wants its idle connection kept opens
/// its own (the SDK does, every 5 s); the node never spends packets keeping an idle,
/// possibly abandoned, connection in its table.
pub const SERVER_KEEP_ALIVE: Option<std::time::Duration> = None;

impl TransportLimits {
    /// The limits of a node config's values.
    pub fn from_config(config: &crate::config::NodeConfig) -> Self {
        TransportLimits {
            max_concurrent_bidi_streams: config.max_streams_per_connection,
            idle_timeout: std::time::Duration::from_secs(config.idle_timeout_secs),
            stream_receive_window: config.edge.stream_receive_window_bytes,
            receive_window: config.edge.connection_receive_window_bytes,
            send_window: config.edge.send_window_bytes,
        }
    }

    /// The quinn transport of these limits.
    pub fn transport(&self) -> Result<quinn::TransportConfig, TlsError> {
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(self.max_concurrent_bidi_streams.into());
        transport.max_concurrent_uni_streams(MAX_CONCURRENT_UNI_STREAMS.into());
        transport.max_idle_timeout(Some(self.idle_timeout.try_into().map_err(|_| {
            TlsError::Rustls(rustls::Error::General("idle timeout too large".into()))
        })?));
        transport.keep_alive_interval(SERVER_KEEP_ALIVE);
        transport.stream_receive_window(self.stream_receive_window.into());
        transport.receive_window(self.receive_window.into());
        transport.send_window(self.send_window.into());
        // No datagrams: nothing uses them, so none is buffered.
        transport.datagram_receive_buffer_size(None);
        Ok(transport)
    }
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits::from_config(&crate::config::NodeConfig::default())
    }
}

/// The QUIC server configuration for the client protocol, presenting `cert`.
pub fn client_protocol_server_config(
    cert: Arc<NodeCert>,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    tls.alpn_protocols = vec![chorus_protocol::ALPN_CLIENT.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(limits.transport()?));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificates_are_made_once_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths::dev(dir.path());
        let ca_key = TlsPaths::dev_ca_key(dir.path());
        assert!(ensure_dev_certificates(&paths, &ca_key, "node-1", &[]).unwrap());
        let first = std::fs::read(&paths.cert).unwrap();
        assert!(!ensure_dev_certificates(&paths, &ca_key, "node-1", &[]).unwrap());
        assert_eq!(std::fs::read(&paths.cert).unwrap(), first);
        assert_eq!(load_certs(&paths.ca_cert).unwrap().len(), 1);
        load_key(&paths.key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        client_protocol_server_config(NodeCert::load(&paths).unwrap(), &TransportLimits::default())
            .unwrap();
    }

    #[test]
    fn a_rotated_certificate_is_presented_and_a_mismatched_key_refused() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let make = |dir: &Path| {
            let paths = TlsPaths::dev(dir);
            ensure_dev_certificates(&paths, &TlsPaths::dev_ca_key(dir), "node-1", &[]).unwrap();
            paths
        };
        let (a, b) = (make(first.path()), make(second.path()));
        let cert = NodeCert::load(&a).unwrap();
        let next = NodeCert::read(&b).unwrap();
        assert!(cert.differs(&next));
        assert!(!cert.differs(&NodeCert::read(&a).unwrap()));
        cert.install(next);
        assert_eq!(cert.current().cert, load_certs(&b.cert).unwrap());
        let crossed = TlsPaths {
            key: a.key.clone(),
            ..b.clone()
        };
        assert!(NodeCert::read(&crossed).is_err());
    }
}
