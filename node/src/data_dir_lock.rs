//! One agent per data dir: an exclusive lock on `<data_dir>/agent.lock`, taken before
//! anything else is opened, so that a second agent pointed at a running node's store
//! (a copied config, a stray `CHORUS_DATA_DIR`) stops at once with the holder's pid
//! instead of failing deep inside the store.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = "agent.lock";

/// Why the data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another process holds it.
    #[error(
        "data dir {dir} is in use by another chorus agent{holder}; each node needs its own data dir"
    )]
    InUse {
        /// The data dir.
        dir: PathBuf,
        /// ` (pid N)` when the holder wrote its pid.
        holder: String,
    },
    /// The lock file could not be opened or written.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `dir` (which must exist) and writes this process's pid in it.
    pub fn acquire(dir: &Path) -> Result<Self, DataDirLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DataDirLockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.take(32).read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(DataDirLockError::InUse {
                    dir: dir.to_path_buf(),
                    holder: if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) {
                        format!(" (pid {pid})")
                    } else {
                        String::new()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(DataDirLockError::InUse { holder, .. }) => {
                assert_eq!(holder, format!(" (pid {})", std::process::id()))
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
