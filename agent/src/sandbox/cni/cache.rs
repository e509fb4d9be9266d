//! What an ADD was done with, kept until its DEL (libcni keeps a similar cache).
//!
//! DEL must run with the same configuration and arguments as ADD, and gets the ADD
//! result as `prevResult`, even if the conf dir changed or the daemon restarted in
//! between. The entry is written before the first plugin runs, so that a crash half-way
//! through ADD still leaves enough to DEL what was done.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::NetworkList;
use super::{CniError, PortMapping};
use crate::sandbox::files::write_atomic;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) container_id: String,
    pub(super) netns: PathBuf,
    pub(super) ifname: String,
    pub(super) cni_args: String,
    pub(super) port_mappings: Vec<PortMapping>,
    pub(super) network: NetworkList,
    /// The ADD result; `None` until ADD completed.
    pub(super) result: Option<Value>,
}

fn path(dir: &Path, container_id: &str) -> PathBuf {
    dir.join(format!("{container_id}.json"))
}

pub(super) fn load(dir: &Path, container_id: &str) -> Result<Option<Entry>, CniError> {
    let path = path(dir, container_id);
    let error = |reason: String| CniError::Cache {
        path: path.clone(),
        reason,
    };
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| error(e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(e.to_string())),
    }
}

pub(super) fn store(dir: &Path, entry: &Entry) -> Result<(), CniError> {
    let path = path(dir, &entry.container_id);
    let error = |reason: String| CniError::Cache {
        path: path.clone(),
        reason,
    };
    fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
    let bytes = serde_json::to_vec_pretty(entry).map_err(|e| error(e.to_string()))?;
    write_atomic(&path, &bytes).map_err(|e| error(e.to_string()))
}

pub(super) fn remove(dir: &Path, container_id: &str) -> Result<(), CniError> {
    let path = path(dir, container_id);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CniError::Cache {
            path,
            reason: e.to_string(),
        }),
        _ => Ok(()),
    }
}
