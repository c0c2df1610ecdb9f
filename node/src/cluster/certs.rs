//! The cluster's certificates and key, made by `chorus certs`: one CA per cluster, a
//! certificate per node signed by it (used both as the QUIC server certificate and as
//! the client certificate of peer links), and the shared key that authenticates gossip.
//!
//! The CA's subject is fixed ([`CLUSTER_CA_NAME`]), so the issuer is rebuilt from the
//! CA key alone when a node certificate is signed later.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::DnsName;

use crate::secrets::SecretFileError;
use crate::tls::{ca_params, time_years};

/// The common name of every cluster CA made by `chorus certs init`.
pub const CLUSTER_CA_NAME: &str = "Chorus cluster CA";
/// The CA certificate's file name.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// The cluster key's file name (hex, mode 0600).
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// Bytes of the cluster key (HMAC-SHA256 key of gossip packets).
pub const CLUSTER_KEY_LEN: usize = 32;
/// Years a node certificate is valid.
const NODE_CERT_YEARS: i64 = 2;
/// Years the cluster CA is valid.
const CA_YEARS: i64 = 10;

/// Why `chorus certs` could not make or read a file. Nothing is left half-written:
/// every check runs before the first file is created.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The file exists already; nothing was written.
    #[error("{path} exists already; refusing to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read, created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A key or certificate could not be generated or parsed.
    #[error("certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The node name cannot be a DNS name (peers check the certificate against it).
    #[error("node name {name:?} is not a valid DNS name")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The cluster key file does not hold exactly [`CLUSTER_KEY_LEN`] hex-encoded bytes.
    #[error("{path}: not a {CLUSTER_KEY_LEN}-byte hex key")]
    BadClusterKey {
        /// The file.
        path: PathBuf,
    },
}

/// The files `chorus certs init` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate.
    pub cert: PathBuf,
    /// The CA private key.
    pub key: PathBuf,
    /// The cluster key.
    pub cluster_key: PathBuf,
}

/// The files `chorus certs node` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertFiles {
    /// The node certificate, signed by the cluster CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Makes a cluster CA and a random cluster key in `dir` (created if missing). Refuses,
/// writing nothing, if any of the three files exists.
pub fn init(dir: &Path) -> Result<CaFiles, CertsError> {
    let files = CaFiles {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
        cluster_key: dir.join(CLUSTER_KEY_FILE),
    };
    for path in [&files.cert, &files.key, &files.cluster_key] {
        refuse_existing(path)?;
    }
    let key = KeyPair::generate()?;
    let mut params = ca_params(CLUSTER_CA_NAME)?;
    params.not_after = params.not_before + time_years(CA_YEARS);
    let cert = params.self_signed(&key)?;
    let cluster_key: [u8; CLUSTER_KEY_LEN] = rand::random();

    create_dir(dir)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), true)?;
    write_new(
        &files.cluster_key,
        format!("{}\n", hex::encode(cluster_key)).as_bytes(),
        true,
    )?;
    write_new(&files.cert, cert.pem().as_bytes(), false)?;
    Ok(files)
}

/// Signs a certificate for node `name` with the CA in `dir` and writes `NAME.pem` and
/// `NAME.key` there. Its subject alternative names are `ips`, `dns` and `name` itself
/// (as a DNS name, which is what peers check a link against); it serves both as a
/// server and as a client certificate. Refuses, writing nothing, if either file exists.
pub fn issue_node(
    dir: &Path,
    name: &str,
    ips: &[IpAddr],
    dns: &[String],
) -> Result<NodeCertFiles, CertsError> {
    let valid = |n: &str| DnsName::try_from(n.to_string()).is_ok() && !n.contains('/');
    if !valid(name) {
        return Err(CertsError::InvalidName { name: name.into() });
    }
    if let Some(bad) = dns.iter().find(|d| !valid(d)) {
        return Err(CertsError::InvalidName { name: bad.clone() });
    }
    let files = NodeCertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    refuse_existing(&files.cert)?;
    refuse_existing(&files.key)?;

    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)?;
    let issuer = Issuer::new(ca_params(CLUSTER_CA_NAME)?, &ca_key);

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Chorus");
    params.distinguished_name.push(DnType::CommonName, name);
    let mut sans: Vec<SanType> = Vec::new();
    for dns_name in std::iter::once(name).chain(dns.iter().map(String::as_str)) {
        let san = SanType::DnsName(dns_name.try_into()?);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    for ip in ips {
        let san = SanType::IpAddress(*ip);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = params.not_before + time_years(NODE_CERT_YEARS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    write_new(&files.key, key.serialize_pem().as_bytes(), true)?;
    write_new(&files.cert, cert.pem().as_bytes(), false)?;
    Ok(files)
}

/// Reads a cluster key written by [`init`].
pub fn read_cluster_key(path: &Path) -> Result<[u8; CLUSTER_KEY_LEN], CertsError> {
    let text = read(path)?;
    let bad = || CertsError::BadClusterKey {
        path: path.to_path_buf(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

fn refuse_existing(path: &Path) -> Result<(), CertsError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(CertsError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CertsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates a file that must not exist yet; secret files get mode 0600 from the start.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertsError> {
    if secret {
        // Key files: the node's one writer of secrets (0600 from creation, no symlink).
        return crate::secrets::write_secret_file(path, contents).map_err(|e| match e {
            SecretFileError::Exists { path } => CertsError::Exists { path },
            SecretFileError::Io { path, source } => CertsError::Io { path, source },
            other => CertsError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(other.to_string()),
            },
        });
    }
    let err = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => CertsError::Exists {
                path: path.to_path_buf(),
            },
            _ => err(source),
        })?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    use super::*;
    use crate::tls::{crypto_provider, load_certs};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Verifies `cert` as a server certificate for `name` against the CA in `ca_dir`.
    fn verifies(ca_dir: &Path, cert: &Path, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_certs(&ca_dir.join(CA_CERT_FILE)).unwrap() {
            roots.add(ca).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            crypto_provider(),
        )
        .build()
        .unwrap();
        let chain = load_certs(cert).unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn init_writes_the_ca_and_a_secret_cluster_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path()).unwrap();
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cluster_key), 0o600);
        assert_eq!(load_certs(&files.cert).unwrap().len(), 1);
        let key = read_cluster_key(&files.cluster_key).unwrap();
        assert_ne!(key, [0; CLUSTER_KEY_LEN]);
        let before = std::fs::read(&files.cert).unwrap();
        assert!(matches!(init(dir.path()), Err(CertsError::Exists { .. })));
        assert_eq!(std::fs::read(&files.cert).unwrap(), before);
    }

    #[test]
    fn init_refuses_when_only_one_file_exists_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLUSTER_KEY_FILE), "x").unwrap();
        assert!(matches!(init(dir.path()), Err(CertsError::Exists { .. })));
        assert!(!dir.path().join(CA_CERT_FILE).exists());
        assert!(!dir.path().join(CA_KEY_FILE).exists());
    }

    #[test]
    fn a_node_certificate_chains_to_its_ca_and_names_the_node() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let files = issue_node(dir.path(), "node-a", &[ip], &["a.example.net".into()]).unwrap();
        assert_eq!(mode(&files.key), 0o600);
        assert!(verifies(dir.path(), &files.cert, "node-a"));
        assert!(verifies(dir.path(), &files.cert, "a.example.net"));
        assert!(verifies(dir.path(), &files.cert, "10.0.0.7"));
        assert!(!verifies(dir.path(), &files.cert, "node-b"));
        assert!(matches!(
            issue_node(dir.path(), "node-a", &[ip], &[]),
            Err(CertsError::Exists { .. })
        ));
    }

    #[test]
    fn a_certificate_from_another_ca_does_not_verify() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        init(ours.path()).unwrap();
        init(theirs.path()).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let files = issue_node(theirs.path(), "node-a", &[ip], &[]).unwrap();
        assert!(verifies(theirs.path(), &files.cert, "node-a"));
        assert!(!verifies(ours.path(), &files.cert, "node-a"));
    }

    #[test]
    fn bad_names_and_a_missing_ca_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            issue_node(dir.path(), "../etc/passwd", &[], &[]),
            Err(CertsError::InvalidName { .. })
        ));
        assert!(matches!(
            issue_node(dir.path(), "node-a", &[], &["bad name".into()]),
            Err(CertsError::InvalidName { .. })
        ));
        assert!(matches!(
            issue_node(dir.path(), "node-a", &[], &[]),
            Err(CertsError::Io { .. })
        ));
    }
}
