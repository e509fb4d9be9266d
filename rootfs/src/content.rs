//! Content-addressed blob store: `content/sha256/<hex>`.
//!
//! Blobs are written into `content/ingest/` and renamed into place only after their
//! digest has been checked, so a partial or corrupt download is never visible under
//! its name. Whatever is left in `ingest/` by a crash is removed at the next open.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::atomic::sync_dir;
use crate::digest::Digest;
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    pub(crate) fn open(root: &Path) -> Result<ContentStore> {
        let blobs = root.join("sha256");
        let ingest = root.join("ingest");
        fs::create_dir_all(&blobs).map_err(Error::io("creating content dir", &blobs))?;
        // No other process shares this root, so anything in ingest/ is a crashed write.
        let _ = fs::remove_dir_all(&ingest);
        fs::create_dir_all(&ingest).map_err(Error::io("creating ingest dir", &ingest))?;
        Ok(ContentStore { blobs, ingest })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        fs::read(&path).map_err(Error::io("reading blob", path))
    }

    /// Every blob in the store.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let entries = fs::read_dir(&self.blobs).map_err(Error::io("listing blobs", &self.blobs))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Digest::parse_lenient(&e.file_name().to_string_lossy()).ok())
            .collect())
    }

    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("deleting blob", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Stores a small in-memory blob; `expected` (when given) must match.
    pub fn put(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let actual = Digest::of(data);
        if let Some(expected) = expected {
            if *expected != actual {
                return Err(Error::DigestMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        if !self.contains(&actual) {
            let tmp = self.temp_path(&actual);
            let result = File::create(&tmp)
                .and_then(|mut f| f.write_all(data).and_then(|_| f.sync_all()))
                .map_err(Error::io("writing blob", &tmp))
                .and_then(|_| self.publish(&tmp, &actual));
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result?;
        }
        Ok(actual)
    }

    /// Copies a file into the store, verifying it against `expected` when given.
    pub fn put_file(&self, source: &Path, expected: Option<&Digest>) -> Result<Digest> {
        if let Some(expected) = expected {
            if self.contains(expected) {
                return Ok(expected.clone());
            }
        }
        let mut input = File::open(source).map_err(Error::io("opening", source))?;
        let tmp = self
            .ingest
            .join(format!("import-{}", rand::random::<u64>()));
        let result = (|| {
            let mut out = File::create(&tmp).map_err(Error::io("creating", &tmp))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = input.read(&mut buf).map_err(Error::io("reading", source))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(Error::io("writing", &tmp))?;
            }
            out.sync_all().map_err(Error::io("syncing", &tmp))?;
            let actual = Digest::from_hasher(hasher);
            if let Some(expected) = expected {
                if *expected != actual {
                    return Err(Error::DigestMismatch {
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    });
                }
            }
            self.publish(&tmp, &actual)?;
            Ok(actual)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Starts an async write of the blob `expected`; nothing is visible until `commit`.
    pub async fn writer(&self, expected: &Digest) -> Result<ContentWriter> {
        let tmp = self.temp_path(expected);
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(Error::io("creating", &tmp))?;
        Ok(ContentWriter {
            store: self.clone(),
            expected: expected.clone(),
            out: Some(tokio::io::BufWriter::with_capacity(1 << 20, file)),
            hasher: Sha256::new(),
            tmp,
            committed: false,
        })
    }

    fn temp_path(&self, digest: &Digest) -> PathBuf {
        self.ingest
            .join(format!("{}-{}", digest.hex(), rand::random::<u64>()))
    }

    fn publish(&self, tmp: &Path, digest: &Digest) -> Result<()> {
        let dest = self.path(digest);
        fs::rename(tmp, &dest).map_err(Error::io("publishing blob", &dest))?;
        sync_dir(&self.blobs)
    }
}

/// An in-progress download. Dropping it without `commit` discards the data.
pub struct ContentWriter {
    store: ContentStore,
    expected: Digest,
    out: Option<tokio::io::BufWriter<tokio::fs::File>>,
    hasher: Sha256,
    tmp: PathBuf,
    committed: bool,
}

impl ContentWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        if let Some(out) = self.out.as_mut() {
            out.write_all(data)
                .await
                .map_err(Error::io("writing", &self.tmp))?;
        }
        Ok(())
    }

    /// Verifies the digest and publishes the blob under its name.
    pub async fn commit(mut self) -> Result<()> {
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Some(mut out) = self.out.take() {
            out.flush().await.map_err(Error::io("writing", &self.tmp))?;
            out.get_mut()
                .sync_all()
                .await
                .map_err(Error::io("syncing", &self.tmp))?;
        }
        let (store, tmp, digest) = (self.store.clone(), self.tmp.clone(), self.expected.clone());
        tokio::task::spawn_blocking(move || store.publish(&tmp, &digest)).await??;
        self.committed = true;
        Ok(())
    }
}

impl Drop for ContentWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verifies_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = store.put(b"hello", None).unwrap();
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        assert_eq!(store.put(b"hello", Some(&digest)).unwrap(), digest);
        let wrong = Digest::of(b"other");
        assert!(matches!(
            store.put(b"hello", Some(&wrong)),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.contains(&wrong));
        assert_eq!(store.list().unwrap(), vec![digest.clone()]);
        store.delete(&digest).unwrap();
        store.delete(&digest).unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn writer_publishes_only_verified_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let expected = Digest::of(b"abcdef");
        let mut writer = store.writer(&expected).await.unwrap();
        writer.write(b"abc").await.unwrap();
        writer.write(b"xyz").await.unwrap();
        assert!(matches!(
            writer.commit().await,
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.contains(&expected));

        let mut writer = store.writer(&expected).await.unwrap();
        writer.write(b"abc").await.unwrap();
        drop(writer); // an abandoned download
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );

        let mut writer = store.writer(&expected).await.unwrap();
        writer.write(b"abc").await.unwrap();
        writer.write(b"def").await.unwrap();
        writer.commit().await.unwrap();
        assert_eq!(store.read(&expected).unwrap(), b"abcdef");
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }
}
