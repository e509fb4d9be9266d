//! peapodd's durable records: one small JSON file per pod or container, `<dir>/<id>.json`,
//! replaced atomically (temp file + rename) so a crash never leaves half a record.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// The records of one kind, on disk and, for reading, in memory: the kubelet lists pods and
/// containers every second, and reading every file each time would cost a disk read per pod per
/// second. Every change goes to disk first and then to memory, so memory never holds what a
/// crash could lose.
#[derive(Debug, Clone)]
pub struct Records<T> {
    dir: PathBuf,
    cache: Arc<Mutex<BTreeMap<String, T>>>,
    /// Distinguishes the temporary files of concurrent saves of one record.
    next_tmp: Arc<AtomicU64>,
}

impl<T: Serialize + DeserializeOwned + Clone> Records<T> {
    /// Opens (creating) the directory and reads every record in it; an unreadable one is skipped
    /// with a warning rather than hiding the rest, and a temporary file left by a crash goes.
    pub fn open(dir: PathBuf) -> Result<Self, RecordError> {
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let mut cache = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let path = entry.map_err(io("listing", &dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = name.strip_suffix(".json").filter(|id| valid_id(id)) else {
                continue;
            };
            match read_record(&path) {
                Ok(record) => {
                    cache.insert(id.to_string(), record);
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable record"),
            }
        }
        Ok(Records {
            dir,
            cache: Arc::new(Mutex::new(cache)),
            next_tmp: Arc::new(AtomicU64::new(0)),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, T>> {
        // A panic while holding the lock cannot leave the map half-changed (every change is one
        // insert or remove), so a poisoned lock is still good.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn save(&self, id: &str, record: &T) -> Result<(), RecordError> {
        if !valid_id(id) {
            return Err(RecordError::NotFound(id.to_string()));
        }
        let path = self.path(id);
        let text = serde_json::to_vec(record).map_err(|e| RecordError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let seq = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{id}.json.{seq}.tmp"));
        // Records live under --root and must survive a power loss (the shims outlive a daemon
        // crash, and the next daemon finds their containers through these): write, fsync,
        // rename, fsync the directory.
        let written = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(io("creating", &tmp))?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &text)
                .await
                .map_err(io("writing", &tmp))?;
            file.sync_all().await.map_err(io("syncing", &tmp))
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        {
            // The rename and the memory change happen together, so that of two concurrent saves
            // the one that lands on disk last is also the one in memory. A rename is one quick
            // metadata operation: fine to do under the lock, on this thread.
            let mut cache = self.cache();
            if let Err(e) = std::fs::rename(&tmp, &path) {
                drop(cache);
                let _ = std::fs::remove_file(&tmp);
                return Err(io("renaming", &tmp)(e));
            }
            cache.insert(id.to_string(), record.clone());
        }
        let dir = tokio::fs::File::open(&self.dir)
            .await
            .map_err(io("opening", &self.dir))?;
        dir.sync_all().await.map_err(io("syncing", &self.dir))
    }

    pub async fn load(&self, id: &str) -> Result<T, RecordError> {
        self.cache()
            .get(id)
            .cloned()
            .ok_or_else(|| RecordError::NotFound(id.to_string()))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.cache().contains_key(id)
    }

    /// Every record.
    pub async fn list(&self) -> Result<Vec<T>, RecordError> {
        Ok(self.cache().values().cloned().collect())
    }

    pub async fn remove(&self, id: &str) -> Result<(), RecordError> {
        if !valid_id(id) {
            return Ok(());
        }
        let mut cache = self.cache();
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RecordError::Io {
                    context: format!("removing record {id}"),
                    source,
                })
            }
        }
        cache.remove(id);
        Ok(())
    }
}

/// An I/O error's mapping, naming what was done to which path.
fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> RecordError {
    let context = format!("{what} {}", path.display());
    move |source| RecordError::Io { context, source }
}

fn read_record<T: DeserializeOwned>(path: &Path) -> Result<T, RecordError> {
    let text = std::fs::read(path).map_err(io("reading", path))?;
    serde_json::from_slice(&text).map_err(|e| RecordError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Note {
        text: String,
    }

    fn note(text: &str) -> Note {
        Note { text: text.into() }
    }

    #[tokio::test]
    async fn what_is_saved_is_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path().join("r")).unwrap();
        records.save("a", &note("one")).await.unwrap();
        records.save("b", &note("two")).await.unwrap();
        records.save("a", &note("three")).await.unwrap();
        records.remove("b").await.unwrap();
        assert_eq!(records.load("a").await.unwrap(), note("three"));
        assert!(matches!(
            records.load("b").await,
            Err(RecordError::NotFound(_))
        ));
        assert!(matches!(
            records.save("../x", &note("no")).await,
            Err(RecordError::NotFound(_))
        ));

        // A record that cannot be read and a temporary file left by a crash.
        std::fs::write(dir.path().join("r/c.json"), b"{not json").unwrap();
        std::fs::write(dir.path().join("r/a.json.7.tmp"), b"{}").unwrap();
        let reopened: Records<Note> = Records::open(dir.path().join("r")).unwrap();
        assert_eq!(reopened.list().await.unwrap(), vec![note("three")]);
        assert!(!dir.path().join("r/a.json.7.tmp").exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_saves_of_one_record_leave_disk_and_memory_alike() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path().to_path_buf()).unwrap();
        let saves: Vec<_> = (0..20)
            .map(|n| {
                let records = records.clone();
                tokio::spawn(async move { records.save("x", &note(&n.to_string())).await })
            })
            .collect();
        for save in saves {
            save.await.unwrap().unwrap();
        }
        let on_disk: Records<Note> = Records::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(
            on_disk.load("x").await.unwrap(),
            records.load("x").await.unwrap()
        );
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "temporary files left behind");
    }
}
