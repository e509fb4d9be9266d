//! `import`: hands an image archive to peapodd through peapod's own `Images.Import`.
//!
//! The archive goes over the socket as a stream of chunks, read from disk as it is sent, so
//! an image of any size needs only a few chunks of memory. A directory (an OCI image layout)
//! is turned into a tar on the way.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use peapod_agent::extension::proto::{ImportRequest, ImportResponse};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::images::{short_id, table_names};
use crate::client::{rpc_error, Cri};
use crate::output::{self, Format, Table};

/// Bytes per message: big enough that per-message costs vanish, far below gRPC's 4 MiB
/// default message limit.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Chunks read ahead of the network.
const READ_AHEAD: usize = 4;

/// What the reading thread sends: the archive's bytes, then `None` once all of it was read.
/// Without that mark a read error could not be told from the end of the archive, and the
/// daemon would import a truncated one.
type Piece = Option<Vec<u8>>;

pub async fn import(
    cri: &mut Cri,
    path: &Path,
    name: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if metadata.is_dir() && !path.join("index.json").is_file() {
        bail!(
            "{} is a directory but not an OCI image layout (it has no index.json)",
            path.display()
        );
    }

    let (pieces, received) = mpsc::channel::<Piece>(READ_AHEAD);
    let source = path.to_path_buf();
    let mut reader = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            buffer: Vec::with_capacity(CHUNK_BYTES),
            pieces,
        };
        if metadata.is_dir() {
            write_layout_tar(&source, &mut out)?;
        } else {
            let mut file = std::fs::File::open(&source)?;
            io::copy(&mut file, &mut out)?;
        }
        out.finish()
    });

    let first = ImportRequest {
        name: name.unwrap_or_default().to_string(),
        chunk: Vec::new(),
    };
    // The stream ends at the end mark only; if the reader dies without one, it stays open
    // until the call is dropped below, which cancels the upload.
    let rest = ReceiverStream::new(received)
        .chain(tokio_stream::pending())
        .map_while(|piece| piece)
        .map(|chunk| ImportRequest {
            name: String::new(),
            chunk,
        });
    let call = cri.peapod.import(tokio_stream::once(first).chain(rest));
    tokio::pin!(call);

    let answer = tokio::select! {
        answer = &mut call => answer,
        read = &mut reader => match read.map_err(|e| anyhow!("reading thread: {e}"))? {
            Ok(()) => call.await,
            // The daemon stopped taking chunks: its answer says why.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => call.await,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        },
    };
    let response = answer
        .map_err(|status| rpc_error("Import", status))
        .with_context(|| format!("importing {}", path.display()))?
        .into_inner();
    print_imported(&response, format)
}

/// An OCI layout directory as a tar with the layout's files at its top, as `tar -C DIR -c .`
/// would make it but without the `./` prefix.
fn write_layout_tar(dir: &Path, out: &mut ChunkWriter) -> io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    // A stable order: the same layout makes the same stream.
    entries.sort();
    let mut tar = tar::Builder::new(out);
    for entry in entries {
        let Some(name) = entry.file_name() else {
            continue;
        };
        if entry.is_dir() {
            tar.append_dir_all(name, &entry)?;
        } else {
            tar.append_path_with_name(&entry, name)?;
        }
    }
    tar.finish()
}

/// Cuts what is written into [`CHUNK_BYTES`] pieces and queues them for sending.
struct ChunkWriter {
    buffer: Vec<u8>,
    pieces: mpsc::Sender<Piece>,
}

impl ChunkWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.send(Some(chunk))
    }

    fn send(&self, piece: Piece) -> io::Result<()> {
        self.pieces
            .blocking_send(piece)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the daemon ended the import"))
    }

    /// Sends what is left and the end mark.
    fn finish(mut self) -> io::Result<()> {
        self.send_buffer()?;
        self.send(None)
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK_BYTES - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

fn print_imported(response: &ImportResponse, format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        let images: Vec<_> = response
            .images
            .iter()
            .map(|i| json!({"id": i.id, "repoTags": i.repo_tags, "repoDigests": i.repo_digests}))
            .collect();
        return output::structured(&json!({ "images": images }), format);
    }
    let mut table = Table::new(&["IMAGE", "TAG", "IMAGE ID"]);
    for image in &response.images {
        for (repo, tag) in table_names(&image.repo_tags, &image.repo_digests) {
            table.row(vec![repo.into(), tag.into(), short_id(&image.id).into()]);
        }
    }
    print!("{}", table.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_at_the_chunk_size_and_end_with_the_mark() {
        let (pieces, mut received) = mpsc::channel(16);
        let mut out = ChunkWriter {
            buffer: Vec::new(),
            pieces,
        };
        out.write_all(&vec![7u8; CHUNK_BYTES + 10]).unwrap();
        out.finish().unwrap();
        let sizes: Vec<Option<usize>> = std::iter::from_fn(|| received.try_recv().ok())
            .map(|piece| piece.map(|chunk| chunk.len()))
            .collect();
        assert_eq!(sizes, vec![Some(CHUNK_BYTES), Some(10), None]);
    }

    #[test]
    fn a_closed_call_is_a_broken_pipe() {
        let (pieces, received) = mpsc::channel(1);
        drop(received);
        let mut out = ChunkWriter {
            buffer: Vec::new(),
            pieces,
        };
        let error = out.write_all(&vec![0u8; CHUNK_BYTES]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
