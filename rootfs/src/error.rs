//! The one error type of this crate: each variant says what went wrong in words an
//! operator can act on, and carries the path, reference or digest involved.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),

    #[error("content {expected} failed verification: the data hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },

    #[error("image {0:?} not found")]
    ImageNotFound(String),

    #[error(
        "image {image} is in use by container snapshot(s) {users:?}; remove the containers first"
    )]
    ImageInUse { image: String, users: Vec<String> },

    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),

    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),

    #[error("invalid snapshot key {0:?}: use letters, digits, '-', '_' and '.' only")]
    InvalidSnapshotKey(String),

    #[error("registry {registry} is blocked by the registries configuration")]
    RegistryBlocked { registry: String },

    #[error("pulling {reference} failed: {reason}")]
    Pull { reference: String, reason: String },

    #[error("no manifest in the index of {reference} matches platform {platform}")]
    NoMatchingPlatform { reference: String, platform: String },

    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),

    #[error("invalid {what}: {reason}")]
    InvalidData { what: String, reason: String },

    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },

    #[error("registries configuration {path}: {reason}")]
    RegistriesConf { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },

    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }

    pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let context = context.into();
        move |source| Error::Sys { context, source }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl ToString) -> Error {
        Error::InvalidData {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
