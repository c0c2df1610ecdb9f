//! Files that hold secrets: the data directory (0700), key files created 0600 with
//! create-new semantics without following a symlink, and the start-up check that
//! refuses a key file others can read, naming it and the fix, as ssh does.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{NodeConfig, admin_key_path};
use crate::tls::TlsPaths;

/// Mode of the data directory and of directories made for key files.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of a key file.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Permission bits that must be clear on a key file: any access by group or others.
const GROUP_OTHER_BITS: u32 = 0o077;

/// A secret file or directory that cannot be made or used safely.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file is readable or writable by its group or others; nothing was read.
    #[error(
        "{path} is accessible by others (mode {mode:04o}): a key file must be private; \
         run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file already exists (or is a symlink): a key file is never overwritten and
    /// never written through a link; nothing was written.
    #[error("{path} already exists (or is a symbolic link); refusing to overwrite a key file")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The filesystem refused; what was created before the failure stays.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

impl SecretFileError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretFileError + '_ {
        move |source| SecretFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left
/// as it is; the returned flag says whether others can enter it, so the caller can warn.
pub fn create_private_dir(dir: &Path) -> Result<bool, SecretFileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(SecretFileError::io(dir))?;
    let mode = std::fs::metadata(dir)
        .map_err(SecretFileError::io(dir))?
        .permissions()
        .mode();
    Ok(mode & GROUP_OTHER_BITS != 0)
}

/// Writes a new key file with mode 0600 from its creation: it must not exist (no
/// overwrite, no race with another writer), and a symlink in its place is refused
/// (`O_NOFOLLOW`, and `O_EXCL` does not follow one either). Its directory is made 0700
/// if missing.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => SecretFileError::Exists {
                path: path.to_path_buf(),
            },
            _ if source.raw_os_error() == Some(libc::ELOOP) => SecretFileError::Exists {
                path: path.to_path_buf(),
            },
            _ => SecretFileError::io(path)(source),
        })?;
    file.write_all(contents)
        .map_err(SecretFileError::io(path))?;
    file.sync_all().map_err(SecretFileError::io(path))
}

/// Refuses a key file that its group or others may access (the mode of the file a
/// symlink points to, as ssh checks it). A missing file passes: whether it must exist
/// is its reader's business.
pub fn check_private_file(path: &Path) -> Result<(), SecretFileError> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SecretFileError::io(path)(e)),
    };
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Every key file a node with `config` reads: the admin key, the node's TLS key, the
/// development CA key and the cluster key.
pub fn key_files(config: &NodeConfig) -> Vec<PathBuf> {
    let mut files = vec![
        admin_key_path(&config.data_dir),
        config.tls_paths().key,
        TlsPaths::dev_ca_key(&config.data_dir),
    ];
    if let Some(cluster) = &config.cluster {
        files.push(cluster.key_file.clone());
    }
    files
}

/// Checks every key file of `config` before the node starts (see [`check_private_file`]).
pub fn check_key_files(config: &NodeConfig) -> Result<(), SecretFileError> {
    key_files(config)
        .iter()
        .try_for_each(|path| check_private_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_secret_file_is_created_0600_once_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/admin.key");
        write_secret_file(&path, b"k\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(matches!(
            write_secret_file(&path, b"again"),
            Err(SecretFileError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"k\n");

        let target = dir.path().join("elsewhere");
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            write_secret_file(&link, b"secret"),
            Err(SecretFileError::Exists { .. })
        ));
        assert!(!target.exists(), "nothing written through the link");
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        std::fs::write(&path, b"k").unwrap();
        for (bits, refused) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
            let result = check_private_file(&path);
            assert_eq!(result.is_err(), refused, "{bits:o}");
            if let Err(e) = result {
                let message = e.to_string();
                assert!(message.contains(&path.display().to_string()), "{message}");
                assert!(message.contains("chmod 600"), "{message}");
            }
        }
        check_private_file(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn the_data_dir_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b/data");
        assert!(!create_private_dir(&data).unwrap());
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            create_private_dir(&data).unwrap(),
            "an open existing dir is reported"
        );
    }
}
