//! The control socket itself: binding it safely, accepting connections, and moving
//! request and response lines between a connection and the [`Handler`].

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::handler::{Handler, Peer};
use super::protocol::{ControlError, MAX_REQUEST_BYTES, Response, parse_request};

/// The socket file's mode: owner read and write only.
pub const SOCKET_MODE: u32 = 0o600;
/// Connections served at once; more are answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection silent for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed accept (e.g. out of file descriptors), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the control socket could not be opened. Nothing is listening after it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket's directory could not be created.
    #[error("creating {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// Another process answers on the socket: probably another agent on this data dir.
    #[error("{path} is in use: is another agent running on this data dir?")]
    InUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way; it was left alone.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding, removing the stale socket, or setting the mode failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
}

/// A bound control socket, mode 0600, not yet accepting.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// `(dev, ino)` of the socket file, so shutdown removes only our own file.
    identity: (u64, u64),
    /// The socket file's owner: the uid allowed in besides root.
    owner: u32,
}

impl ControlSocket {
    /// Binds `path`: creates its directory, replaces a stale socket nobody answers on,
    /// refuses a live one, and sets mode 0600 before the first accept. Needs a tokio
    /// runtime.
    pub fn bind(path: &Path) -> Result<ControlSocket, BindError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BindError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(BindError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                info!(path = %path.display(), "removing a stale control socket");
                std::fs::remove_file(path).map_err(|source| BindError::Io {
                    action: "removing stale socket",
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BindError::Io {
                    action: "inspecting",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let io_err = |action| {
            move |source| BindError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let listener = UnixListener::bind(path).map_err(io_err("binding"))?;
        // Between bind and chmod the file has the umask's mode; a peer that connects in
        // that window is still checked by uid when its connection is accepted.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io_err("setting the mode of"))?;
        let meta = std::fs::metadata(path).map_err(io_err("inspecting"))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            owner: meta.uid(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections until `shutdown`, then waits for open connections to finish
    /// their current request and removes the socket file (if it is still ours).
    pub async fn serve(self, handler: Arc<Handler>, shutdown: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if connections.len() >= MAX_CONNECTIONS {
                            refuse(&stream, ControlError::Busy { limit: MAX_CONNECTIONS });
                            continue;
                        }
                        connections.spawn(connection(
                            stream,
                            Arc::clone(&handler),
                            self.owner,
                            shutdown.clone(),
                        ));
                    }
                    Err(e) => {
                        warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        while connections.join_next().await.is_some() {}
        self.remove_file();
    }

    fn remove_file(&self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), error = %e, "cannot remove the control socket");
        }
    }
}

/// Answers a connection that will not be served with one error line, without waiting:
/// a fresh socket's buffer always takes a line this short.
fn refuse(stream: &UnixStream, error: ControlError) {
    let _ = stream.try_write(&Response::from(Err(error)).to_line());
}

/// Serves one connection: line in, line out, until EOF, idleness, an over-long line, or
/// shutdown.
async fn connection(
    stream: UnixStream,
    handler: Arc<Handler>,
    owner: u32,
    shutdown: CancellationToken,
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            uid: cred.uid(),
            pid: cred.pid(),
        },
        Err(e) => {
            warn!(error = %e, "control connection without peer credentials; closed");
            return;
        }
    };
    let span = info_span!("ctl", uid = peer.uid, pid = peer.pid);
    async move {
        // The file mode already keeps others out; this also covers the bind-to-chmod
        // window and a socket placed in a directory others can reach.
        if peer.uid != owner && peer.uid != 0 {
            warn!("control connection from a foreign uid refused");
            refuse(&stream, ControlError::Forbidden { uid: peer.uid });
            return;
        }
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            // One byte over the limit tells an over-long line from one exactly at it.
            let limited = (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1);
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = tokio::time::timeout(IDLE_TIMEOUT, read_line(limited, &mut line)) => read,
            };
            match read {
                Err(_) => {
                    debug!("control connection idle; closed");
                    return;
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "control connection read failed");
                    return;
                }
                Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
            }
            let too_long = line.len() > MAX_REQUEST_BYTES && !line.ends_with(b"\n");
            if line.iter().all(u8::is_ascii_whitespace) && !too_long {
                continue;
            }
            let outcome = match parse_request(&line) {
                Ok(request) => {
                    debug!(cmd = request.name(), "control request");
                    handler.handle(&peer, request).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = &outcome {
                debug!(error = %e, "control request failed");
            }
            if write
                .write_all(&Response::from(outcome).to_line())
                .await
                .is_err()
                || too_long
            {
                // After an over-long line the stream is mid-line: no way to resync.
                return;
            }
        }
    }
    .instrument(span)
    .await
}

async fn read_line(
    mut reader: tokio::io::Take<&mut BufReader<tokio::net::unix::OwnedReadHalf>>,
    line: &mut Vec<u8>,
) -> io::Result<usize> {
    reader.read_until(b'\n', line).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::NodeInfo;
    use crate::control::protocol::Reply;
    use chorus_actors::{Durability, NodeHandle, StoreConfig};
    use chorus_protocol::NodeId;
    use tokio::io::AsyncBufReadExt;

    async fn handler(dir: &Path, socket: &Path) -> Arc<Handler> {
        let node = NodeHandle::start(StoreConfig {
            path: dir.join("store"),
            node: NodeId("ctl-test".into()),
            partitions: 8,
            durability: Durability::Flush,
            log: chorus_actors::store::LogConfig::default(),
        })
        .await
        .unwrap();
        let log = crate::logging::init(Default::default(), "warn");
        Arc::new(Handler::new(
            node,
            log,
            NodeInfo {
                node_id: "ctl-test".into(),
                data_dir: dir.to_path_buf(),
                listen: "127.0.0.1:0".into(),
                socket: socket.to_path_buf(),
                limits: crate::config::LimitsSection::default(),
                cluster: crate::cluster::state::ClusterState::new(
                    NodeId("ctl-test".into()),
                    "127.0.0.1:7400".parse().unwrap(),
                    8,
                )
                .unwrap(),
                runtime: None,
                replication: None,
                links: None,
                shutdown: tokio_util::sync::CancellationToken::new(),
                tasks: tokio_util::task::TaskTracker::new(),
                reloader: None,
            },
        ))
    }

    /// Serves a fresh socket in `dir`; returns its path, the stop token and the task.
    async fn serve(dir: &Path) -> (PathBuf, CancellationToken, tokio::task::JoinHandle<()>) {
        let path = dir.join("run/chorus.sock");
        let socket = ControlSocket::bind(&path).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(socket.serve(handler(dir, &path).await, stop.clone()));
        (path, stop, task)
    }

    async fn send(path: &Path, bytes: &[u8]) -> Vec<Response> {
        let stream = UnixStream::connect(path).await.unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(bytes).await.unwrap();
        write.shutdown().await.unwrap();
        let mut lines = BufReader::new(read).lines();
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(serde_json::from_str(&line).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn the_socket_is_mode_0600_in_a_created_dir_and_removed_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stop, task) = serve(dir.path()).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE, "{mode:o}");
        stop.cancel();
        task.await.unwrap();
        assert!(!path.exists(), "socket left behind");
    }

    #[tokio::test]
    async fn requests_are_answered_in_order_and_bad_ones_get_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stop, task) = serve(dir.path()).await;
        let responses = send(
            &path,
            b"{\"cmd\":\"status\"}\nnot json\n\n{\"cmd\":\"log-level\",\"level\":\"[[[\"}\n{\"cmd\":\"audit-verify\"}",
        )
        .await;
        assert_eq!(responses.len(), 4, "{responses:?}");
        match &responses[0].result {
            Some(Reply::Status(s)) => {
                assert_eq!(s.node_id, "ctl-test");
                assert_eq!(s.pid, std::process::id());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            responses[1].error,
            Some(ControlError::BadRequest { .. })
        ));
        assert!(matches!(
            &responses[2].error,
            Some(ControlError::Invalid { field, .. }) if field == "level"
        ));
        match &responses[3].result {
            // No key was made here and a refused filter is not audited: an empty log.
            Some(Reply::AuditVerify(v)) => assert_eq!((v.entries, v.intact), (0, true)),
            other => panic!("{other:?}"),
        }
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn snapshot_writes_an_audited_snapshot_and_refuses_relative_and_busy_targets() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stop, task) = serve(dir.path()).await;
        let snap = dir.path().join("snap");
        let request = |dir: &str| format!("{{\"cmd\":\"snapshot\",\"dir\":{dir:?}}}\n");
        let mut bytes = request("relative/snap").into_bytes();
        bytes.extend(request(snap.to_str().unwrap()).into_bytes());
        bytes.extend(request(snap.to_str().unwrap()).into_bytes());
        let responses = send(&path, &bytes).await;
        assert_eq!(responses.len(), 3, "{responses:?}");
        assert!(matches!(
            &responses[0].error,
            Some(ControlError::Invalid { field, .. }) if field == "dir"
        ));
        match &responses[1].result {
            Some(Reply::Snapshot(s)) => {
                assert_eq!(s.segments_done, s.segments_total);
                assert_eq!(s.bytes_done, s.bytes_total);
                assert_eq!(s.audit_seq, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(snap.join("manifest.json").exists());
        // The snapshot is there now: the same target again is refused.
        assert!(matches!(
            &responses[2].error,
            Some(ControlError::Invalid { field, .. }) if field == "dir"
        ));
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_over_long_line_is_refused_and_the_connection_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stop, task) = serve(dir.path()).await;
        let mut bytes = vec![b'x'; MAX_REQUEST_BYTES + 10];
        bytes.extend_from_slice(b"\n{\"cmd\":\"status\"}\n");
        let responses = send(&path, &bytes).await;
        assert_eq!(responses.len(), 1, "{responses:?}");
        assert_eq!(
            responses[0].error,
            Some(ControlError::TooLong {
                limit: MAX_REQUEST_BYTES
            })
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = ControlSocket::bind(&path).expect("stale socket replaced");
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(BindError::InUse { .. })
        ));
        drop(live);
    }

    #[tokio::test]
    async fn a_file_in_the_way_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
