//! Serving the CRI services on the daemon's unix socket.

use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use peapod_cri_proto::v1::image_service_server::ImageServiceServer;
use peapod_cri_proto::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::cri::{ImageApi, RuntimeApi};
use crate::daemon::Daemon;

/// Container images can have large configs and the kubelet lists many
/// images at once; containerd allows 16 MiB messages for the same reason.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another daemon is already serving on {0}")]
    SocketInUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{context} {path}")]
    Socket {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving gRPC")]
    Transport(#[from] tonic::transport::Error),
}

fn socket_error(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServeError {
    let path = path.to_path_buf();
    move |source| ServeError::Socket {
        context,
        path,
        source,
    }
}

/// Binds the CRI socket. A socket file left by a daemon that died is
/// replaced; one a live daemon still answers on is not.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServeError::NotASocket(path.to_path_buf()))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::SocketInUse(path.to_path_buf())),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(socket_error("removing stale socket", path))?;
            }
            Err(e) => return Err(socket_error("probing existing socket", path)(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(socket_error("inspecting", path)(e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(socket_error("creating socket directory", parent))?;
    }
    let listener = UnixListener::bind(path).map_err(socket_error("binding", path))?;
    // Whoever can talk to this socket can run anything as root: owner only
    // (and root's group, as containerd allows).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(socket_error("setting permissions of", path))?;
    Ok(listener)
}

/// Serves RuntimeService and ImageService on `listener` until `shutdown`
/// completes, then lets calls in flight finish and removes the socket file.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let socket = daemon.config.socket.clone();
    let runtime = RuntimeServiceServer::new(RuntimeApi::new(daemon.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // peapod's own API (image import) shares the socket: one endpoint for clients to find.
    let extension = crate::extension::images_service(daemon.clone());
    let images = ImageServiceServer::new(ImageApi::new(daemon))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tracing::info!(socket = %socket.display(), "serving CRI");
    let served = tonic::transport::Server::builder()
        // Every log line of a call then names the RPC it belongs to.
        .trace_fn(|request| tracing::info_span!("cri", rpc = request.uri().path()))
        .add_service(runtime)
        .add_service(images)
        .add_service(extension)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    remove_socket(&socket);
    served.map_err(ServeError::from)
}

/// Removes the socket file at shutdown, so clients see "no daemon" at once.
pub fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != ErrorKind::NotFound {
            tracing::warn!(socket = %path.display(), error = %e, "could not remove socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_but_live_one_and_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");

        // A socket nobody listens on any more, as after kill -9.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(ServeError::SocketInUse(_))));
        drop(live);

        let file = dir.path().join("regular");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(bind(&file), Err(ServeError::NotASocket(_))));
    }
}
