//! peapod's own gRPC API (`peapod.v1`, `agent/proto/peapod.proto`), served on the CRI socket
//! next to the CRI services, for what CRI has no call for: importing image archives.
//!
//! `Images.Import` takes the archive as a stream of chunks, so the daemon never opens files
//! of the client's (which may live in another mount namespace, or be unreadable to us on
//! purpose), in the way `ctr images import` hands archives to containerd.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::daemon::Daemon;

/// The `peapod.v1` protobuf package: messages and gRPC stubs.
pub mod proto {
    // Generated code: its style is prost's and tonic's, not ours.
    #![allow(clippy::all, clippy::pedantic)]

    tonic::include_proto!("peapod.v1");
}

use proto::images_server::{Images, ImagesServer};
use proto::{ImportRequest, ImportResponse, ImportedImage};

/// Where archives being received are spooled, under the daemon's root directory.
const SPOOL_DIR: &str = "import-spool";

/// Chunks received but not yet written: enough to keep the disk busy while the next ones
/// arrive, few enough that a slow disk slows the client down instead of filling memory.
const SPOOL_QUEUE: usize = 8;

/// The `Images` service, ready to be added to the daemon's gRPC server.
pub fn images_service(daemon: Arc<Daemon>) -> ImagesServer<ImagesApi> {
    ImagesServer::new(ImagesApi::new(daemon))
}

pub struct ImagesApi {
    daemon: Arc<Daemon>,
    spool_dir: PathBuf,
}

impl ImagesApi {
    /// Also removes spools a daemon that died mid-import left behind: nothing reads them.
    pub fn new(daemon: Arc<Daemon>) -> ImagesApi {
        let spool_dir = spool_dir(&daemon.config.root);
        match std::fs::remove_dir_all(&spool_dir) {
            Ok(()) => tracing::debug!(dir = %spool_dir.display(), "removed old import spools"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                dir = %spool_dir.display(),
                error = %e,
                "could not remove old import spools"
            ),
        }
        ImagesApi { daemon, spool_dir }
    }

    /// Writes the client's stream to a spool file, returning it (removed when dropped) and
    /// the image name of the first message.
    ///
    /// If the client goes away mid-stream, either `message()` fails or the whole call is
    /// dropped by the server; both drop the spool, so nothing is left behind.
    async fn receive(
        &self,
        mut stream: Streaming<ImportRequest>,
    ) -> Result<(NamedTempFile, Option<String>), Status> {
        let dir = self.spool_dir.clone();
        let spool = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::Builder::new()
                .prefix("import-")
                .suffix(".tar")
                .tempfile_in(&dir)
        })
        .await
        .map_err(|e| Status::internal(format!("creating the import spool: {e}")))?
        .map_err(|e| {
            Status::internal(format!(
                "creating an import spool in {}: {e}",
                self.spool_dir.display()
            ))
        })?;
        let file = spool
            .as_file()
            .try_clone()
            .map_err(|e| Status::internal(format!("opening the import spool: {e}")))?;

        // Disk writes happen on a blocking thread, overlapping with the network.
        let (chunks, queue) = mpsc::channel::<Vec<u8>>(SPOOL_QUEUE);
        let writer = tokio::task::spawn_blocking(move || write_chunks(file, queue));
        let mut name = None;
        let received = async {
            let mut first = true;
            while let Some(message) = stream.message().await? {
                if std::mem::take(&mut first) && !message.name.is_empty() {
                    // Checked now, not after the whole archive has been received.
                    check_repository(&message.name)?;
                    name = Some(message.name);
                }
                if !message.chunk.is_empty() && chunks.send(message.chunk).await.is_err() {
                    // The writer stopped on an error; it reports it below.
                    break;
                }
            }
            Ok::<(), Status>(())
        }
        .await;
        drop(chunks);
        let written = writer
            .await
            .map_err(|e| Status::internal(format!("spooling the archive: {e}")))?;
        received?;
        written.map_err(|e| {
            Status::internal(format!(
                "spooling the archive to {}: {e}",
                spool.path().display()
            ))
        })?;
        Ok((spool, name))
    }
}

/// The import name is a repository the archive's tags are appended to (`example.com/app`
/// and ref.name `v1` give `example.com/app:v1`), so it must not carry a tag or digest itself.
fn check_repository(name: &str) -> Result<(), Status> {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        return Err(Status::invalid_argument(format!(
            "import name {name:?} must be a repository without tag or digest (e.g. example.com/app): the archive gives the tags"
        )));
    }
    name.parse::<peapod_rootfs::Reference>()
        .map(drop)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn write_chunks(
    mut file: std::fs::File,
    mut queue: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    use std::io::Write;
    while let Some(chunk) = queue.blocking_recv() {
        file.write_all(&chunk)?;
    }
    file.flush()
}

#[tonic::async_trait]
impl Images for ImagesApi {
    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let (spool, name) = self
            .receive(request.into_inner())
            .await
            .inspect_err(|status| {
                tracing::warn!(error = status.message(), "receiving an archive failed")
            })?;
        let bytes = spool.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            bytes,
            name = name.as_deref().unwrap_or(""),
            "archive received, importing"
        );
        // Once the archive is all here, the import runs to its end even if the client leaves
        // (as a pull does): stopping it halfway would only leave work to undo. So it is not
        // driven by this call's future but by a thread of its own. (Not `tokio::spawn`: rustc
        // cannot prove the store's import future `Send`, a known limitation with closures
        // over borrowed data; `block_on` needs no such proof.)
        let daemon = self.daemon.clone();
        let spool_path = spool.path().display().to_string();
        let runtime = tokio::runtime::Handle::current();
        let imported = tokio::task::spawn_blocking(move || {
            let imported = runtime.block_on(daemon.images.import(spool.path(), name.as_deref()));
            drop(spool);
            imported
        })
        .await
        .map_err(|e| Status::internal(format!("importing: {e}")))?
        .map_err(|e| import_error(e, &spool_path))
        .inspect_err(|status| tracing::warn!(error = status.message(), "import failed"))?;
        for image in &imported {
            tracing::info!(id = %image.id, tags = ?image.repo_tags, "imported image");
        }
        Ok(Response::new(ImportResponse {
            images: imported
                .into_iter()
                .map(|image| ImportedImage {
                    id: image.id.to_string(),
                    repo_tags: image.repo_tags,
                    repo_digests: image.repo_digests,
                })
                .collect(),
        }))
    }
}

/// INVALID_ARGUMENT when the archive is to blame, so the client knows that retrying the same
/// file is pointless; the CRI mapping for everything else (disk, I/O). The store names the
/// archive by the spool's path, which means nothing to the client, so that is left out.
fn import_error(error: peapod_rootfs::Error, spool_path: &str) -> Status {
    use peapod_rootfs::Error;
    let reason = match &error {
        Error::InvalidData { what, reason } if what == spool_path => reason.clone(),
        Error::InvalidData { .. }
        | Error::UnsafeEntry { .. }
        | Error::InvalidDigest(_)
        | Error::InvalidReference { .. }
        | Error::DigestMismatch { .. }
        | Error::UnsupportedMediaType(_) => error.to_string().replace(spool_path, "archive"),
        // An I/O error no system call raised comes from a decoder (tar, gzip, zstd) that
        // found malformed or truncated data. Its path is only our temp copy, and its text
        // may quote the archive's bytes: those are made printable.
        Error::Io {
            context, source, ..
        } if source.raw_os_error().is_none() => {
            format!("{context}: {}", printable(&source.to_string()))
        }
        _ => return crate::cri::errors::image_error(error),
    };
    Status::invalid_argument(format!("not an importable image archive: {reason}"))
}

/// The longest decoder message passed on to the client.
const MAX_QUOTE: usize = 160;

/// The start of `text` up to its first character that is not printable ASCII, and at most
/// [`MAX_QUOTE`] long: a decoder's message about garbage can go on to quote the garbage.
fn printable(text: &str) -> String {
    let printable = |c: &char| *c == ' ' || c.is_ascii_graphic();
    let mut out: String = text.chars().take_while(printable).take(MAX_QUOTE).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// The spool directory of a daemon whose root is `root`; tests look into it.
pub fn spool_dir(root: &Path) -> PathBuf {
    root.join(SPOOL_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_faults_are_invalid_argument_and_disk_faults_are_not() {
        let truncated = peapod_rootfs::Error::Io {
            context: "reading layer tar",
            path: PathBuf::from("/x"),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated"),
        };
        assert_eq!(
            import_error(truncated, "/spool").code(),
            tonic::Code::InvalidArgument
        );
        let disk_full = peapod_rootfs::Error::Io {
            context: "writing",
            path: PathBuf::from("/x"),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(
            import_error(disk_full, "/spool").code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn garbage_quoted_by_a_decoder_is_made_printable() {
        let error = peapod_rootfs::Error::Io {
            context: "reading layer tar",
            path: PathBuf::from("/root/rootfs/import-1"),
            source: std::io::Error::other("bad cksum \u{1}\u{fffd}é"),
        };
        let status = import_error(error, "/spool");
        assert_eq!(
            status.message(),
            "not an importable image archive: reading layer tar: bad cksum …"
        );
        let error = peapod_rootfs::Error::InvalidData {
            what: "/spool/import-1.tar".into(),
            reason: "no index.json".into(),
        };
        assert_eq!(
            import_error(error, "/spool/import-1.tar").message(),
            "not an importable image archive: no index.json"
        );
    }
}
