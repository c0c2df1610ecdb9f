//! The members' standings in the data dir (JSON, replaced atomically), so that a
//! restarted member knows at once who is warm and who is cordoned, and keeps its own
//! standing (a cordon outlives a restart; a warm member does not warm up again).

use std::path::{Path, PathBuf};

use super::keyring_file::replace_file;
use super::standing::Standings;

/// The standings file's name in the data dir.
pub const STANDINGS_FILE: &str = "cluster-standings.json";

/// The largest standings file read (a thousand members with cordons fit many times).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why the standings file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StandingFileError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a standings file (bad JSON or too large).
    #[error("{path}: not a standings file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The standings in `path`, or `None` if there is no such file.
pub fn load(path: &Path) -> Result<Option<Standings>, StandingFileError> {
    let io = |source| StandingFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let malformed = |reason: String| StandingFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(malformed(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let text = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| malformed(e.to_string()))
}

/// Writes `standings` to `path` atomically.
pub fn save(path: &Path, standings: &Standings) -> Result<(), StandingFileError> {
    let text = serde_json::to_vec(standings).expect("standings serialise");
    replace_file(path, &text).map_err(|source| StandingFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::standing::{PartitionSet, Standing};
    use chorus_protocol::NodeId;

    #[test]
    fn standings_come_back_as_they_were_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STANDINGS_FILE);
        assert!(load(&path).unwrap().is_none());
        let standings = Standings::from_entries([(
            NodeId("a".into()),
            Standing {
                version: 7,
                warming: false,
                departed: false,
                cordoned: Some(PartitionSet::of([1, 2, 300])),
            },
        )]);
        save(&path, &standings).unwrap();
        assert_eq!(load(&path).unwrap(), Some(standings));
        std::fs::write(&path, b"{").unwrap();
        assert!(matches!(
            load(&path),
            Err(StandingFileError::Malformed { .. })
        ));
    }
}
