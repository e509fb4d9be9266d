//! peapodd's durable records: one small JSON file per pod or container, `<dir>/<id>.json`,
//! replaced atomically (temp file + rename) so a crash never leaves half a record.
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no record {0:?}")]
    NotFound(String),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Ids name files and directories, and come from CRI requests: anything but a plain name (no
/// `/`, no leading `.`) could reach outside peapodd's directories, so it cannot exist.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn open(dir: PathBuf) -> Result<Self, RecordError> {
        std::fs::create_dir_all(&dir).map_err(|source| RecordError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        Ok(Records { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub async fn save<T: Serialize>(&self, id: &str, record: &T) -> Result<(), RecordError> {
        let path = self.path(id);
        let text = serde_json::to_vec(record).map_err(|e| RecordError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        let io = |what: &str, p: &Path| {
            let context = format!("{what} {}", p.display());
            move |source| RecordError::Io { context, source }
        };
        // Records live under --root and must survive a power loss (the shims outlive a daemon
        // crash, and the next daemon finds their containers through these): write, fsync,
        // rename, fsync the directory.
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(io("creating", &tmp))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &text)
            .await
            .map_err(io("writing", &tmp))?;
        file.sync_all().await.map_err(io("syncing", &tmp))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io("renaming", &tmp))?;
        let dir = tokio::fs::File::open(&self.dir)
            .await
            .map_err(io("opening", &self.dir))?;
        dir.sync_all().await.map_err(io("syncing", &self.dir))
    }

    pub async fn load<T: DeserializeOwned>(&self, id: &str) -> Result<T, RecordError> {
        if !valid_id(id) {
            return Err(RecordError::NotFound(id.to_string()));
        }
        let path = self.path(id);
        let text = match tokio::fs::read(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::NotFound(id.to_string()))
            }
            Err(source) => {
                return Err(RecordError::Io {
                    context: format!("reading {}", path.display()),
                    source,
                })
            }
        };
        serde_json::from_slice(&text).map_err(|e| RecordError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Every readable record; a corrupt one is skipped with a warning rather than hiding the rest.
    pub async fn list<T: DeserializeOwned>(&self) -> Result<Vec<T>, RecordError> {
        let io = |source| RecordError::Io {
            context: format!("listing {}", self.dir.display()),
            source,
        };
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dir).await.map_err(io)?;
        while let Some(entry) = dir.next_entry().await.map_err(io)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match self.load(id).await {
                Ok(record) => out.push(record),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable record"),
            }
        }
        Ok(out)
    }

    pub async fn remove(&self, id: &str) -> Result<(), RecordError> {
        if !valid_id(id) {
            return Ok(());
        }
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RecordError::Io {
                context: format!("removing record {id}"),
                source,
            }),
        }
    }
}
