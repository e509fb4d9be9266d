//! Small JSON state files written so that a crash leaves either the old or the new
//! file, never a torn one: write a temp file beside it, fsync, rename, fsync the dir.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::invalid(path.display().to_string(), e))?;
    write_bytes(path, &data)
}

pub(crate) fn write_bytes(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(Error::io("creating temp file", &tmp))?;
        file.write_all(data).map_err(Error::io("writing", &tmp))?;
        file.sync_all().map_err(Error::io("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes and syncs a JSON file inside a directory nobody reads yet (it is published
/// later by renaming the directory), so no temp file is needed.
pub(crate) fn write_json_unpublished<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::invalid(path.display().to_string(), e))?;
    let mut file = File::create(path).map_err(Error::io("creating", path))?;
    file.write_all(&data).map_err(Error::io("writing", path))?;
    file.sync_all().map_err(Error::io("syncing", path))
}

/// Makes a rename durable: the directory entry itself lives in the parent's data.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing directory", dir))
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::invalid(path.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}
