//! The gossip keyring's file in the data dir: JSON, mode 0600, replaced atomically
//! (written beside, synced, renamed over, directory synced), so that a crash leaves
//! either the old keyring or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::membership::{Keyring, KeyringError, keyring::KeyringFile};

/// The keyring file's name in the data dir.
pub const KEYRING_FILE: &str = "gossip-keyring.json";

/// The largest keyring file read: 16 keys of 64 hex digits and their JSON are ~1.3 KB.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Why the keyring file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyringFileError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read it: the keys may have leaked; nothing was loaded.
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Not a keyring file (bad JSON or too large).
    #[error("{path}: not a keyring file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file describes an invalid keyring.
    #[error("{path}: {source}")]
    Keyring {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyringError,
    },
}

/// The keyring in `path`, or `None` if there is no such file.
pub fn load(path: &Path) -> Result<Option<Keyring>, KeyringFileError> {
    let io = |source| KeyringFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyringFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let malformed = |reason: String| KeyringFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(malformed(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let file: KeyringFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    Keyring::from_file(&file)
        .map(Some)
        .map_err(|source| KeyringFileError::Keyring {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `file` to `path` atomically, mode 0600.
pub fn save(path: &Path, file: &KeyringFile) -> Result<(), KeyringFileError> {
    let text = serde_json::to_vec_pretty(file).expect("a keyring file serialises");
    replace_file(path, &text).map_err(|source| KeyringFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one:
/// written beside (mode 0600), synced, renamed over, the directory synced.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::membership::{ClusterKey, GossipKey};
    use super::*;

    #[test]
    fn a_saved_keyring_loads_back_and_its_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYRING_FILE);
        assert!(load(&path).unwrap().is_none());
        let mut ring = Keyring::from_cluster_key(&ClusterKey([1; 32]));
        let id = ring.install(GossipKey::from_bytes([2; 32])).unwrap();
        ring.use_key(id).unwrap();
        save(&path, &ring.to_file()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.primary(), id);
        assert_eq!(back.list(), ring.list());
        // Saved again over the first: replaced, not appended.
        ring.remove(Keyring::from_cluster_key(&ClusterKey([1; 32])).primary())
            .unwrap();
        save(&path, &ring.to_file()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().list().len(), 1);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYRING_FILE);
        let ring = Keyring::from_cluster_key(&ClusterKey([1; 32]));
        save(&path, &ring.to_file()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load(&path).unwrap_err();
        assert!(
            matches!(error, KeyringFileError::Exposed { mode: 0o644, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 600"));
    }

    #[test]
    fn a_malformed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYRING_FILE);
        std::fs::write(&path, b"{\"primary\": 1}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load(&path),
            Err(KeyringFileError::Malformed { .. })
        ));
    }
}
