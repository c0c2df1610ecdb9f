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
/// The manifest's file name inside a host bundle: which node, at which addresses.
pub const BUNDLE_MANIFEST_FILE: &str = "bundle.toml";
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

/// What `chorus certs bundle` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleFiles {
    /// The bundle written.
    pub out: PathBuf,
    /// The node certificate and key it holds.
    pub node: NodeCertFiles,
    /// Whether the node certificate was signed now (false: the one in the CA dir was
    /// taken as it was).
    pub issued: bool,
}

/// Makes one host's bundle at `out`: a tar archive of plain files, each mode 0600, that
/// `deploy/install.sh --bundle` installs. It holds [`BUNDLE_MANIFEST_FILE`] (`node` and
/// `ips`, the first being the address the host listens on), the CA certificate, the
/// cluster key, and `NAME.pem` / `NAME.key`, signed now with the CA in `dir` unless both
/// are there already. The CA's own key never goes in. `out` is created new with mode
/// 0600 and is not followed if it is a symlink; nothing is written if it exists.
pub fn bundle(
    dir: &Path,
    name: &str,
    ips: &[IpAddr],
    dns: &[String],
    out: &Path,
) -> Result<BundleFiles, CertsError> {
    // Checked before the name becomes a path: `../x` must not read a file elsewhere.
    check_names(name, dns)?;
    refuse_existing(out)?;
    let node = NodeCertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    let issued = !(node.cert.exists() && node.key.exists());
    if issued {
        issue_node(dir, name, ips, dns)?;
    }
    let manifest = format!(
        "node = \"{name}\"\nips = [{}]\n",
        ips.iter()
            .map(|ip| format!("\"{ip}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut entries: Vec<(String, Vec<u8>)> = vec![(BUNDLE_MANIFEST_FILE.into(), manifest.into())];
    for file in [CA_CERT_FILE, CLUSTER_KEY_FILE] {
        entries.push((file.into(), read(&dir.join(file))?.into()));
    }
    entries.push((format!("{name}.pem"), read(&node.cert)?.into()));
    entries.push((format!("{name}.key"), read(&node.key)?.into()));

    let archive_err = |source| CertsError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut archive = tar::Builder::new(Vec::new());
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (path, contents) in &entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(contents.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        archive
            .append_data(&mut header, path, contents.as_slice())
            .map_err(archive_err)?;
    }
    let bytes = archive.into_inner().map_err(archive_err)?;
    write_new(out, &bytes, true)?;
    Ok(BundleFiles {
        out: out.to_path_buf(),
        node,
        issued,
    })
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
    check_names(name, dns)?;
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

/// Refuses a node name or DNS name that is not a DNS name (and so not a path either).
fn check_names(name: &str, dns: &[String]) -> Result<(), CertsError> {
    let valid = |n: &str| DnsName::try_from(n.to_string()).is_ok() && !n.contains('/');
    if !valid(name) {
        return Err(CertsError::InvalidName { name: name.into() });
    }
    match dns.iter().find(|d| !valid(d)) {
        Some(bad) => Err(CertsError::InvalidName { name: bad.clone() }),
        None => Ok(()),
    }
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
    fn a_bundle_holds_the_host_files_but_not_the_ca_key_and_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let out = dir.path().join("node-a.tar");
        let made = bundle(dir.path(), "node-a", &[ip], &[], &out).unwrap();
        assert!(made.issued);
        assert_eq!(mode(&out), 0o600);
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().mode().unwrap(), 0o600);
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            if name == BUNDLE_MANIFEST_FILE {
                assert_eq!(text, "node = \"node-a\"\nips = [\"10.0.0.7\"]\n");
            } else {
                assert_eq!(
                    text,
                    std::fs::read_to_string(dir.path().join(&name)).unwrap()
                );
            }
            names.push(name);
        }
        names.sort();
        assert_eq!(
            names,
            [
                "bundle.toml",
                "ca.pem",
                "cluster.key",
                "node-a.key",
                "node-a.pem"
            ]
        );
        assert!(matches!(
            bundle(dir.path(), "node-a", &[ip], &[], &out),
            Err(CertsError::Exists { .. })
        ));
        // A second bundle of the same node reuses its certificate.
        let again = bundle(dir.path(), "node-a", &[ip], &[], &dir.path().join("b.tar")).unwrap();
        assert!(!again.issued);
    }

    #[test]
    fn a_bundle_is_not_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("link.tar");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert!(matches!(
            bundle(dir.path(), "node-a", &[ip], &[], &link),
            Err(CertsError::Exists { .. })
        ));
        assert!(!target.exists());
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
